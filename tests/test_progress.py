"""Live progress of the running task, taken from the webui's /progress."""

from __future__ import annotations

import pytest
from pytest_aiohttp import AiohttpClient

from inuqueue.config import Config
from tests.conftest import API, Daemon, StandinHandle, wait_progress


@pytest.fixture
async def fast_polling(aiohttp_client: AiohttpClient, daemon_config: Config) -> Daemon:
    daemon = Daemon(aiohttp_client, daemon_config)
    await daemon.start(progress_interval_s=0.01)
    return daemon


async def test_progress_follows_the_webui(
    fast_polling: Daemon, standin: StandinHandle
) -> None:
    daemon = fast_polling
    standin.state.hold(at_step=5, at_job=1)
    task_id = await daemon.enqueue({"steps": 10, "n_iter": 2})
    await standin.state.wait_held(1)

    # Held before its fifth step: four steps (0-based 4) of the second batch.
    progress = await wait_progress(daemon, task_id, lambda p: p["step"] == 4)
    task = await (await daemon.client.get(f"{API}/task/{task_id}")).json()

    # The webui's formula: 0.01 + job_no/job_count + step/steps/job_count.
    assert progress["fraction"] == pytest.approx(0.01 + 1 / 2 + 4 / 10 / 2)
    assert (progress["job_no"], progress["job_count"], progress["steps"]) == (1, 2, 10)
    assert progress["eta_s"] >= 0
    assert task["progress"]["step"] == 4
    standin.state.release()
    done = await daemon.wait_status(task_id, "done")
    assert "progress" not in done
    await daemon.stop()


async def test_a_live_preview_is_served_while_the_task_runs(
    fast_polling: Daemon, standin: StandinHandle
) -> None:
    daemon = fast_polling
    standin.state.hold(at_step=12)
    task_id = await daemon.enqueue({"steps": 20})
    await standin.state.wait_held(1)

    progress = await wait_progress(daemon, task_id, lambda p: "preview_url" in p)
    preview = await daemon.client.get(progress["preview_url"])

    assert preview.status == 200
    assert preview.content_type == "image/png"
    assert (await preview.read()).startswith(b"\x89PNG")
    standin.state.release()
    await daemon.wait_status(task_id, "done")
    gone = await daemon.client.get(f"{API}/task/{task_id}/preview")
    assert (gone.status, (await gone.json())["error"]) == (404, "no_preview")
    await daemon.stop()
