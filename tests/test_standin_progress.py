"""Progress, the FIFO queue lock, interrupt and skip, seen through held generations."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from inuqueue.standin import STANDIN, Standin, StandinConfig, create_standin_app

Client = TestClient[web.Request, web.Application]
IDLE_STATE_KEYS = [
    "skipped",
    "interrupted",
    "stopping_generation",
    "job",
    "job_count",
    "job_timestamp",
    "job_no",
    "sampling_step",
    "sampling_steps",
]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_standin_app(StandinConfig(step_ms=0)))


def standin_of(client: Client) -> Standin:
    return client.app[STANDIN]


async def progress(client: Client, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/sdapi/v1/progress{query}")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


def start(
    client: Client, path: str = "/sdapi/v1/txt2img", **body: Any
) -> asyncio.Task[ClientResponse]:
    return asyncio.create_task(client.post(path, json=body))


async def json_of(task: asyncio.Task[ClientResponse]) -> dict[str, Any]:
    response = await task
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_idle_progress_has_the_exact_zero_shape(client: Client) -> None:
    response = await client.get("/sdapi/v1/progress")

    assert await response.text() == (
        '{"progress":0.0,"eta_relative":0.0,"state":{"skipped":false,'
        '"interrupted":false,"stopping_generation":false,"job":"","job_count":0,'
        '"job_timestamp":"0","job_no":0,"sampling_step":0,"sampling_steps":0},'
        '"current_image":null,"textinfo":null}'
    )


async def test_held_generation_reports_running_before_its_first_step(
    client: Client,
) -> None:
    standin = standin_of(client)
    standin.hold()
    task = start(client, steps=10, n_iter=2)
    await standin.wait_held()

    body = await progress(client)

    assert body["progress"] == pytest.approx(0.01)
    state = body["state"]
    assert list(state) == IDLE_STATE_KEYS
    assert state["job"] == "Batch 1 out of 2"
    assert (state["job_count"], state["job_no"]) == (2, 0)
    assert (state["sampling_step"], state["sampling_steps"]) == (0, 10)
    assert len(state["job_timestamp"]) == 14
    assert body["eta_relative"] >= 0
    standin.release()
    await json_of(task)


async def test_progress_follows_the_webui_formula_mid_job(client: Client) -> None:
    standin = standin_of(client)
    standin.hold(at_step=5)
    began = time.time()
    task = start(client, steps=10, n_iter=2)
    await standin.wait_held()

    first = await progress(client)
    standin.release()
    standin.hold(at_step=3, at_job=1)
    await standin.wait_held(2)
    second = await progress(client)
    elapsed_bound_s = time.time() - began
    standin.release()
    await json_of(task)

    # p = 0.01 + job_no/job_count + (1/job_count) * sampling_step/sampling_steps
    assert first["state"]["sampling_step"] == 4
    assert first["progress"] == pytest.approx(0.01 + 0 / 2 + 0.5 * 4 / 10)
    assert second["state"]["job_no"] == 1 and second["state"]["sampling_step"] == 2
    p = 0.01 + 1 / 2 + 0.5 * 2 / 10
    assert second["progress"] == pytest.approx(p)
    assert 0 <= second["eta_relative"] <= elapsed_bound_s * (1 / p - 1) + 1e-6


async def test_hires_doubles_the_job_count(client: Client) -> None:
    standin = standin_of(client)
    standin.hold()
    task = start(client, steps=4, n_iter=2, enable_hr=True, denoising_strength=0.5)
    await standin.wait_held()

    assert (await progress(client))["state"]["job_count"] == 4
    standin.release()
    await json_of(task)


async def test_img2img_runs_a_denoising_share_of_the_steps(client: Client) -> None:
    source = (await json_of(start(client, steps=1, width=64, height=64)))["images"][0]
    standin = standin_of(client)
    standin.hold()
    task = start(
        client,
        "/sdapi/v1/img2img",
        init_images=[source],
        steps=20,
        denoising_strength=0.5,
    )
    await standin.wait_held()

    body = await progress(client)

    assert body["state"]["sampling_steps"] == int(0.5 * 20) + 1
    assert body["state"]["job"] == "scripts_img2img"
    standin.release()
    await json_of(task)


async def test_live_preview_appears_after_ten_steps(client: Client) -> None:
    standin = standin_of(client)
    standin.hold(at_step=6)
    task = start(client, steps=20, width=256, height=128)
    await standin.wait_held()
    early = await progress(client)
    standin.release()
    standin.hold(at_step=15)
    await standin.wait_held(2)

    late = await progress(client)
    skipped = await progress(client, "?skip_current_image=true")
    standin.release()
    await json_of(task)

    assert early["current_image"] is None
    preview = base64.b64decode(late["current_image"])
    assert preview.startswith(b"\x89PNG\r\n\x1a\n")
    assert preview[16:24] == (32).to_bytes(4, "big") + (16).to_bytes(4, "big")
    assert skipped["current_image"] is None


async def test_bad_skip_current_image_is_a_query_422(client: Client) -> None:
    response = await client.get("/sdapi/v1/progress?skip_current_image=perhaps")

    assert response.status == 422
    assert await response.json() == {
        "detail": [
            {
                "loc": ["query", "skip_current_image"],
                "msg": "value could not be parsed to a boolean",
                "type": "type_error.bool",
            }
        ]
    }


async def test_generations_run_one_at_a_time_in_arrival_order(client: Client) -> None:
    standin = standin_of(client)
    standin.hold()
    first = start(client, steps=2, force_task_id="A")
    await standin.wait_generations(1)
    second = start(client, steps=2, force_task_id="B")
    await standin.wait_queued(2)
    third = start(client, steps=2, force_task_id="C")
    await standin.wait_queued(3)

    pending = await (await client.get("/internal/pending-tasks")).json()
    queued = await (
        await client.post("/internal/progress", json={"id_task": "C"})
    ).json()
    assert standin.generations_started == 1
    standin.release()
    for task in (first, second, third):
        await json_of(task)

    assert pending == {"size": 2, "tasks": ["B", "C"]}
    assert queued["queued"] is True and queued["textinfo"] == "In queue: 2/2"
    assert list(standin.tasks.finished) == ["A", "B", "C"]
    assert standin.generations_finished == 3


async def test_internal_progress_tracks_the_running_task(client: Client) -> None:
    standin = standin_of(client)
    standin.hold(at_step=3)
    task = start(client, steps=6, force_task_id="task(txt2img-ABCDEFG)")
    await standin.wait_held()

    running = await (
        await client.post(
            "/internal/progress", json={"id_task": "task(txt2img-ABCDEFG)"}
        )
    ).json()
    unknown = await (
        await client.post("/internal/progress", json={"id_task": "x"})
    ).json()
    standin.release()
    await json_of(task)
    done = await (
        await client.post(
            "/internal/progress", json={"id_task": "task(txt2img-ABCDEFG)"}
        )
    ).json()

    assert running["active"] is True and running["queued"] is False
    assert running["progress"] == pytest.approx(2 / 6)  # no 0.01 offset here
    assert set(running) == {
        "active",
        "queued",
        "completed",
        "progress",
        "eta",
        "live_preview",
        "id_live_preview",
        "textinfo",
    }
    assert unknown == {
        "active": False,
        "queued": False,
        "completed": False,
        "progress": None,
        "eta": None,
        "live_preview": None,
        "id_live_preview": -1,
        "textinfo": "Waiting...",
    }
    assert done["completed"] is True and done["active"] is False


async def test_default_task_ids_have_the_webui_form(client: Client) -> None:
    standin = standin_of(client)
    standin.hold()
    task = start(client, steps=1)
    await standin.wait_held()

    current = standin.tasks.current
    standin.release()
    await json_of(task)

    assert current is not None
    assert current.startswith("task(txt2img-") and current.endswith(")")
    assert len(current) == len("task(txt2img-") + 7 + len(")")


async def test_interrupt_returns_200_with_the_partial_batch(client: Client) -> None:
    standin = standin_of(client)
    full = await json_of(start(client, steps=10, seed=11, batch_size=2))
    standin.hold(at_step=5)
    task = start(
        client,
        steps=10,
        seed=11,
        batch_size=2,
        n_iter=3,
        enable_hr=True,
        denoising_strength=0.5,
    )
    await standin.wait_held()

    answer = await (await client.post("/sdapi/v1/interrupt")).text()
    standin.release()
    reply = await json_of(task)

    assert answer == "{}"
    assert len(reply["images"]) == 2  # the current batch only; no hires pass either
    assert reply["images"] != full["images"]
    assert json.loads(reply["info"])["all_seeds"] == [11 + i for i in range(6)]
    after = await progress(client)
    assert after["state"]["interrupted"] is True and after["progress"] == 0.0


async def test_interrupt_while_idle_is_lost(client: Client) -> None:
    assert (await (await client.post("/sdapi/v1/interrupt")).json()) == {}
    assert (await progress(client))["state"]["interrupted"] is True

    reply = await json_of(start(client, steps=3, seed=5, n_iter=2))

    assert len(reply["images"]) == 2
    assert (await progress(client))["state"]["interrupted"] is False


async def test_skip_ends_only_the_current_batch(client: Client) -> None:
    standin = standin_of(client)
    full = await json_of(start(client, steps=8, seed=20, n_iter=2))
    standin.hold(at_step=4)
    task = start(client, steps=8, seed=20, n_iter=2)
    await standin.wait_held()

    answer = await (await client.post("/sdapi/v1/skip")).text()
    standin.release()
    reply = await json_of(task)

    assert answer == "null"
    assert len(reply["images"]) == 2
    assert reply["images"][0] != full["images"][0]  # partly denoised
    assert reply["images"][1] == full["images"][1]  # the next batch ran in full
    assert (await progress(client))["state"]["skipped"] is False


async def test_skip_in_the_last_batch_stays_visible_until_the_next_job(
    client: Client,
) -> None:
    standin = standin_of(client)
    standin.hold(at_step=2)
    task = start(client, steps=4)
    await standin.wait_held()
    await client.post("/sdapi/v1/skip")
    standin.release()
    await json_of(task)

    assert (await progress(client))["state"]["skipped"] is True


async def test_steps_really_take_step_ms(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_standin_app(StandinConfig(step_ms=5)))
    began = time.monotonic()

    await json_of(start(client, steps=6, width=64, height=64))

    assert time.monotonic() - began >= 6 * 0.005


async def test_a_bad_mask_fails_before_the_queue(client: Client) -> None:
    standin = standin_of(client)
    standin.hold()
    running = start(client, steps=1)
    await standin.wait_held()

    response = await client.post(
        "/sdapi/v1/img2img", json={"init_images": ["x"], "mask": "bm90IGFuIGltYWdl"}
    )

    assert response.status == 500  # answered while the queue is still busy
    assert (await response.json())["detail"] == "Invalid encoded image"
    assert standin.generations_queued == 1
    standin.release()
    await json_of(running)


async def test_bad_init_images_fail_only_holding_the_lock(client: Client) -> None:
    standin = standin_of(client)
    standin.hold()
    running = start(client, steps=1)
    await standin.wait_held()
    bad = start(
        client, "/sdapi/v1/img2img", init_images=["bm9wZQ=="], force_task_id="bad"
    )
    await standin.wait_queued(2)

    waiting = await (await client.get("/internal/pending-tasks")).json()
    standin.release()
    await json_of(running)
    response = await bad
    left = await (await client.get("/internal/pending-tasks")).json()

    assert waiting["tasks"] == ["bad"]
    assert response.status == 500
    assert (await response.json())["detail"] == "Invalid encoded image"
    assert left["tasks"] == ["bad"]  # never started, so never leaves the list
    assert standin.generations_started == 1


async def test_interrupt_skips_the_hires_pass(client: Client) -> None:
    standin = standin_of(client)
    standin.hold(at_step=2)
    task = start(
        client, steps=4, enable_hr=True, denoising_strength=0.5, width=64, height=64
    )
    await standin.wait_held()
    await client.post("/sdapi/v1/interrupt")
    standin.release()

    picture = base64.b64decode((await json_of(task))["images"][0])

    assert picture[16:24] == (64).to_bytes(4, "big") * 2  # the first pass, not 128


async def test_a_client_disconnect_cancels_nothing(client: Client) -> None:
    standin = standin_of(client)
    standin.hold()
    running = start(client, steps=1)
    await standin.wait_held()
    queued = start(client, steps=1, force_task_id="gone")
    await standin.wait_queued(2)

    queued.cancel()  # the client gives up; the webui runs the request anyway
    standin.release()
    await json_of(running)
    await standin.wait_finished(2)

    assert list(standin.tasks.finished)[-1] == "gone"
