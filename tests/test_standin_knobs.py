"""The fault knobs, in process and over /_standin/: failures, cut replies, slowness."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from inuqueue.standin import STANDIN, Standin, StandinConfig, create_standin_app

Client = TestClient[web.Request, web.Application]
NO_GZIP = {"Accept-Encoding": "identity"}


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_standin_app(StandinConfig(step_ms=0)))


def standin_of(client: Client) -> Standin:
    return client.app[STANDIN]


async def generate(client: Client, **body: Any) -> aiohttp.ClientResponse:
    return await client.post(
        "/sdapi/v1/txt2img", json={"steps": 1, **body}, headers=NO_GZIP
    )


async def test_fail_next_fails_that_many_generations(client: Client) -> None:
    standin_of(client).fail_next(2, status=503)

    statuses = [(await generate(client)).status for _ in range(3)]
    recovered = await (await generate(client)).json()

    assert statuses == [503, 503, 200]
    assert set(recovered) == {"images", "parameters", "info"}


async def test_a_failure_has_the_webui_500_shape(client: Client) -> None:
    standin_of(client).fail_next(1)

    response = await generate(client, force_task_id="doomed")
    pending = await (
        await client.post("/internal/progress", json={"id_task": "doomed"})
    ).json()

    assert response.status == 500
    body = await response.json()
    assert set(body) == {"error", "detail", "body", "errors"}
    assert (body["error"], body["detail"], body["body"]) == ("RuntimeError", "", "")
    assert body["errors"]
    assert pending["active"] is True  # finish_task is skipped, as upstream
    assert standin_of(client).generations_finished == 1


async def test_a_held_job_fails_once_released(client: Client) -> None:
    standin = standin_of(client)
    standin.hold()
    task = asyncio.create_task(generate(client))
    await standin.wait_held()
    running = await (await client.get("/sdapi/v1/progress")).json()
    standin.fail_next(1)
    standin.release()

    assert running["state"]["job_count"] == 1
    assert (await task).status == 500


@pytest.mark.parametrize("after_bytes", [0, 100])
async def test_drop_next_cuts_the_reply_mid_body(
    client: Client, after_bytes: int
) -> None:
    standin_of(client).drop_next(1, after_bytes=after_bytes)

    with pytest.raises(aiohttp.ClientPayloadError):
        response = await generate(client)
        await response.read()

    assert (await generate(client)).status == 200
    assert standin_of(client).generations_finished == 2


async def test_dropped_reply_sends_its_headers_first(client: Client) -> None:
    standin_of(client).drop_next(1, after_bytes=10)

    response = await generate(client)

    assert response.status == 200
    assert int(response.headers["Content-Length"]) > 10
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_delay_slows_every_reply(client: Client) -> None:
    standin_of(client).delay_ms = 60
    began = time.monotonic()

    await client.get("/sdapi/v1/progress")

    assert time.monotonic() - began >= 0.06


async def test_knobs_work_over_http(client: Client) -> None:
    answers = [
        await client.post("/_standin/fail-next", json={"count": 1, "status": 502}),
        await client.post("/_standin/drop-next", json={"count": 0}),
        await client.post("/_standin/delay", json={"delay_ms": 0}),
    ]
    failed = await generate(client)
    stats = await (await client.get("/_standin/stats")).json()

    assert [answer.status for answer in answers] == [200, 200, 200]
    assert failed.status == 502
    assert stats["generations_started"] == 1 and stats["fail_next"] == 0
    requests = await (await client.get("/_standin/requests")).json()
    assert requests == [["/sdapi/v1/txt2img", {"steps": 1}]]


async def test_hold_and_release_over_http(client: Client) -> None:
    await client.post("/_standin/hold", json={"at_step": 0})
    task = asyncio.create_task(generate(client))
    waited = await client.post("/_standin/wait", json={"held": 1, "timeout_s": 5})
    stats = await waited.json()
    await client.post("/_standin/release")

    assert waited.status == 200
    assert stats["generations_held"] == 1 and stats["held"] is True
    assert (await task).status == 200


async def test_wait_times_out_with_408(client: Client) -> None:
    response = await client.post(
        "/_standin/wait", json={"started": 1, "timeout_s": 0.01}
    )

    assert response.status == 408


async def test_knob_bodies_are_validated(client: Client) -> None:
    response = await client.post("/_standin/fail-next", json={"count": "many"})

    assert response.status == 422
    assert (await response.json())["detail"][0]["loc"] == ["body", "count"]


async def test_delay_does_not_slow_the_knobs(client: Client) -> None:
    standin_of(client).delay_ms = 10_000

    response = await client.post("/_standin/delay", json={"delay_ms": 0})

    assert response.status == 200
    assert standin_of(client).delay_ms == 0
