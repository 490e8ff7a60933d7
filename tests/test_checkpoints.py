"""Checkpoint names resolved against the webui's list, never silently ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from inuqueue.checkpoints import CheckpointUnknown, match_checkpoint
from inuqueue.standin import STANDIN, StandinConfig, create_standin_app
from tests.conftest import API, Daemon, StandinHandle, free_port, started_daemon

SDXL = "sd_xl_base_1.0.safetensors [31e35c80fc]"
MODELS = [
    {
        "title": SDXL,
        "model_name": "sd_xl_base_1.0",
        "hash": "31e35c80fc",
        "sha256": "31e35c80fc" + "0" * 54,
        "filename": "C:\\webui\\models\\Stable-diffusion\\sd_xl_base_1.0.safetensors",
    },
    {"title": "v1-5-pruned-emaonly.safetensors [6ce0161689]", "hash": "6ce0161689"},
]


@pytest.mark.parametrize(
    "name",
    [SDXL, "sd_xl_base_1.0", "31e35c80fc", "sd_xl_base_1.0.safetensors", "xl_base"],
)
def test_a_checkpoint_is_found_by_any_name_the_webui_takes(name: str) -> None:
    assert match_checkpoint(MODELS, name) == SDXL


def test_an_unknown_checkpoint_lists_the_close_ones() -> None:
    with pytest.raises(CheckpointUnknown) as caught:
        match_checkpoint(MODELS, "sd_xl_bass_1.0")

    assert caught.value.close == [SDXL]


async def test_enqueue_resolves_the_name_to_the_webui_title(
    daemon: Daemon, standin: StandinHandle
) -> None:
    task_id = await daemon.enqueue({"checkpoint": "31e35c80fc"})
    await daemon.wait_status(task_id, "done")

    sent = standin.state.requests[-1][1]
    assert sent["override_settings"]["sd_model_checkpoint"] == SDXL


async def test_an_unknown_checkpoint_is_refused_at_enqueue(daemon: Daemon) -> None:
    response = await daemon.client.post(
        f"{API}/queue/txt2img", json={"checkpoint": "sdxl-turbo"}
    )
    body = await response.json()

    assert (response.status, body["error"], body["field"]) == (
        422,
        "unknown_checkpoint",
        "checkpoint",
    )
    assert "sd-models" in body["message"]
    assert daemon.runtime.queue.journal.last_seq == 0


async def test_a_name_queued_while_the_webui_is_down_is_resolved_at_start(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    port = free_port()
    daemon = await started_daemon(
        aiohttp_client, f"http://127.0.0.1:{port}", tmp_path / "data"
    )
    good = await daemon.enqueue({"checkpoint": "sd_xl_base_1.0"})
    bad = await daemon.enqueue({"checkpoint": "no-such-model"})

    app = create_standin_app(StandinConfig(step_ms=0))
    await aiohttp_server(app, port=port)
    done = await daemon.wait_status(good, "done")
    failed = await daemon.wait_status(bad, "failed")

    assert done["attempts"] == 1
    sent = app[STANDIN].requests[0][1]
    assert sent["override_settings"]["sd_model_checkpoint"] == SDXL
    assert failed["error"]["reason"] == "unknown_checkpoint"
    assert len(app[STANDIN].requests) == 1
    await daemon.stop()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sdxl_vae", "sdxl_vae.safetensors"),
        ("sdxl_vae.safetensors", "sdxl_vae.safetensors"),
        ("automatic", "Automatic"),
        ("None", "None"),
    ],
)
async def test_a_vae_is_resolved_into_the_override(
    daemon: Daemon, standin: StandinHandle, name: str, value: str
) -> None:
    await daemon.wait_status(await daemon.enqueue({"vae": name}), "done")

    assert standin.state.requests[-1][1]["override_settings"]["sd_vae"] == value


async def test_an_unknown_vae_is_refused_with_the_close_ones(daemon: Daemon) -> None:
    response = await daemon.client.post(
        f"{API}/queue/txt2img", json={"vae": "sdxl-vae"}
    )
    body = await response.json()

    assert (response.status, body["error"], body["field"]) == (
        422,
        "unknown_vae",
        "vae",
    )
    assert body["close_matches"] == ["sdxl_vae.safetensors"]
