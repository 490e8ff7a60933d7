"""The webui's own txt2img/img2img sent to inuqueue: queued, durable, same answer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from pytest_aiohttp import AiohttpClient

from inuqueue.config import Config
from tests.conftest import API, Daemon, StandinHandle, hold_a_running_task, tiny_png

# A test dependency (setup.cfg): a missing one must fail the run, not skip it.
webuiapi: Any = importlib.import_module("webuiapi")

FIXTURE = Path(__file__).parent / "fixtures" / "txt2img-webuiapi-defaults.json"


async def test_txt2img_answers_as_the_webui_would_and_the_task_is_kept(
    daemon: Daemon, standin: StandinHandle
) -> None:
    body = {"prompt": "a harbour", "seed": 11, "batch_size": 2, "steps": 3}
    async with (
        aiohttp.ClientSession() as direct,
        direct.post(standin.url + "/sdapi/v1/txt2img", json=body) as r,
    ):
        webui = await r.json()

    response = await daemon.client.post("/sdapi/v1/txt2img", json=body)
    answer = await response.json()

    assert response.status == 200
    task_id = response.headers["X-Inuqueue-Task-Id"]
    assert list(answer) == ["images", "parameters", "info"]
    assert answer["images"] == webui["images"]
    info = json.loads(answer["info"])
    assert info["all_seeds"] == [11, 12]
    assert info["infotexts"] == json.loads(webui["info"])["infotexts"]
    assert answer["parameters"]["prompt"] == "a harbour"
    assert answer["parameters"]["force_task_id"] == task_id
    task = await (await daemon.client.get(f"{API}/task/{task_id}")).json()
    assert task["status"] == "done"
    digests = [
        hashlib.sha256(base64.b64decode(i)).hexdigest() for i in answer["images"]
    ]
    assert [image["digest"] for image in task["images"]] == digests


async def test_img2img_through_the_queue(
    daemon: Daemon, standin: StandinHandle
) -> None:
    init = base64.b64encode(tiny_png(32, 32)).decode()

    response = await daemon.client.post(
        "/sdapi/v1/img2img", json={"init_images": [init], "steps": 4, "width": 64}
    )
    answer = await response.json()

    assert response.status == 200
    assert len(answer["images"]) == 1
    assert answer["parameters"]["init_images"] is None
    assert base64.b64decode(standin.state.requests[-1][1]["init_images"][0]) == (
        base64.b64decode(init)
    )


async def test_bad_requests_get_the_webui_s_own_errors(daemon: Daemon) -> None:
    wrong_type = await daemon.client.post("/sdapi/v1/txt2img", json={"steps": "x"})
    assert wrong_type.status == 422
    assert (await wrong_type.json())["detail"][0]["loc"] == ["body", "steps"]

    bad_json = await daemon.client.post(
        "/sdapi/v1/txt2img", data=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status == 422
    assert (await bad_json.json())["detail"][0]["type"] == "value_error.jsondecode"

    no_image = await daemon.client.post("/sdapi/v1/img2img", json={"prompt": "p"})
    assert no_image.status == 404
    assert (await no_image.json())["detail"] == "Init image not found"

    junk = await daemon.client.post("/sdapi/v1/img2img", json={"init_images": ["eA=="]})
    assert junk.status == 500
    assert (await junk.json())["detail"] == "Invalid encoded image"
    assert daemon.runtime.queue.journal.last_seq == 0


async def test_a_webui_failure_comes_back_as_the_webui_sent_it(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.fail_next(1)

    response = await daemon.client.post("/sdapi/v1/txt2img", json={"steps": 1})

    assert response.status == 500
    body = await response.json()
    assert body["error"] == "RuntimeError"
    task_id = response.headers["X-Inuqueue-Task-Id"]
    assert (await daemon.wait_status(task_id, "failed"))["error"]["status"] == 500


async def test_a_client_that_gives_up_does_not_cancel_its_task(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.hold()
    url = str(daemon.client.make_url("/sdapi/v1/txt2img"))
    async with aiohttp.ClientSession() as impatient:
        request = asyncio.create_task(impatient.post(url, json={"seed": 4}))
        await standin.state.wait_generations(1)
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)

    (task_id,) = daemon.runtime.queue.state.tasks
    standin.state.release()
    task = await daemon.wait_status(task_id, "done")

    images = await (await daemon.client.get(f"{API}/task/{task_id}/results")).json()
    assert images["images"][0]["seed"] == 4
    assert task["images"]


async def test_the_webuiapi_client_works_unchanged(
    aiohttp_client: AiohttpClient, daemon_config: Config, standin: StandinHandle
) -> None:
    daemon = Daemon(aiohttp_client, daemon_config)
    client = await daemon.start()
    api = await asyncio.to_thread(
        webuiapi.WebUIApi, host="127.0.0.1", port=client.server.port
    )

    result = await asyncio.to_thread(
        api.txt2img, prompt="cute squirrel", seed=1003, styles=["anime"], cfg_scale=7
    )
    assert result.image.size == (512, 512)
    assert result.info["seed"] == 1003
    init = result.image
    edited = await asyncio.to_thread(
        api.img2img, images=[init], prompt="the same, at night", seed=5
    )
    assert edited.info["all_seeds"] == [5]

    models = await asyncio.to_thread(api.util_get_model_names)
    assert "sd_xl_base_1.0" in [name.split(".")[0] for name in models] or models
    samplers = await asyncio.to_thread(api.util_get_sampler_names)
    assert "Euler a" in samplers
    await asyncio.to_thread(api.set_options, {"send_seed": False})
    options = await asyncio.to_thread(api.get_options)
    assert options["send_seed"] is False
    history = await (await client.get(f"{API}/history")).json()
    assert history["total"] == 2
    await daemon.stop()


async def test_the_body_webuiapi_sends_is_queued_as_it_is(
    daemon: Daemon, standin: StandinHandle
) -> None:
    body = orjson.loads(FIXTURE.read_bytes())

    response = await daemon.client.post("/sdapi/v1/txt2img", json=body)

    assert response.status == 200
    sent = standin.state.requests[-1][1]
    assert {key: sent[key] for key in body} == {**body, "send_images": True}


async def test_a_waiting_client_is_answered_when_the_daemon_stops(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await daemon.client.post(f"{API}/queue/pause")
    url = str(daemon.client.make_url("/sdapi/v1/txt2img"))
    async with aiohttp.ClientSession() as own_session:
        waiting = asyncio.create_task(own_session.post(url, json={"prompt": "later"}))
        queue = daemon.runtime.queue
        await queue.wait_until(lambda: len(queue.state.pending) == 1)

        stopping = asyncio.create_task(daemon.stop())
        response = await waiting
        body = await response.json()
        await stopping

    assert response.status == 503
    task_id = response.headers["X-Inuqueue-Task-Id"]
    assert "stays queued" in body["detail"]
    await daemon.start()
    assert daemon.runtime.queue.state.tasks[task_id].status == "pending"


async def test_a_task_cancelled_while_its_client_waits_is_an_error_for_it(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await hold_a_running_task(daemon, standin)
    waiting = asyncio.create_task(daemon.client.post("/sdapi/v1/txt2img/", json={}))
    queue = daemon.runtime.queue
    await queue.wait_until(lambda: len(queue.state.pending) == 1)
    (task_id,) = [key[2] for key in queue.state.pending]

    await daemon.client.delete(f"{API}/task/{task_id}")
    response = await waiting

    assert response.status == 409
    assert response.headers["X-Inuqueue-Task-Id"] == task_id
    assert "cancelled" in (await response.json())["detail"]
    standin.state.release()
