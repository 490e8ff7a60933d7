"""Webhooks: a final task is POSTed to its callback_url, retried, signed, journaled."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient

from inuqueue.config import Config
from inuqueue.journal import encode_record
from inuqueue.webhooks import Deliverer
from tests.conftest import (
    API,
    Daemon,
    DaemonProcess,
    StandinHandle,
    delete_while_held,
    free_port,
    hold_a_running_task,
    poll_until,
    quick_config,
    run_inuqueue,
)
from tests.test_events import EventStream

AS_API = "/agent-scheduler/v1"
# In-process waits: generous for a loaded machine, short next to the test timeout.
WAIT_S = 15.0
# Back-off quick enough that a few retries take well under a second.
FAST_RETRIES: dict[str, Any] = {
    "webhook_retry_initial_s": 0.05,
    "webhook_retry_max_s": 0.2,
    "webhook_retry_for_s": 30.0,
}
SECRET = "hook-secret"
FINAL = ("delivered", "rejected", "gave_up")


@dataclass
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    # Wait for `Receiver.release()` before answering.
    hang: bool = False
    location: str | None = None


@dataclass
class Hit:
    """One request the receiver got."""

    path: str
    headers: CIMultiDict[str]
    body: bytes
    at: float
    query: str = ""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that records each request and answers as
    its script says (the last reply repeats); down until `start()`."""

    port: int
    script: list[Reply] = field(default_factory=lambda: [Reply()])
    hits: list[Hit] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The callback URL to give at enqueue."""
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Receiver:
        """Listen on the port from now on."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    def release(self) -> None:
        """Let hanging requests (and later ones) answer."""
        self._released.set()

    async def stop(self) -> None:
        """Answer whatever hangs and stop listening."""
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.hits.append(
            Hit(
                request.path,
                request.headers.copy(),
                body,
                time.monotonic(),
                request.query_string,
            )
        )
        reply = self.script[min(len(self.hits), len(self.script)) - 1]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.hang:
                await self._released.wait()
        finally:
            self.in_flight -= 1
        headers = {"Location": reply.location} if reply.location else {}
        return web.Response(status=reply.status, text="noted", headers=headers)

    async def wait_hits(self, count: int) -> list[Hit]:
        """Wait until `count` requests arrived."""

        async def enough() -> bool:
            return len(self.hits) >= count

        await poll_until(enough, timeout_s=WAIT_S)
        return self.hits

    async def wait_in_flight(self, count: int) -> None:
        """Wait until `count` requests hang here at once."""

        async def enough() -> bool:
            return self.in_flight >= count

        await poll_until(enough, timeout_s=WAIT_S)


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Receiver]]:
    """Make receivers (not started) on free ports; all stopped when the test ends."""
    made: list[Receiver] = []

    def make(*script: Reply, port: int | None = None) -> Receiver:
        receiver = Receiver(port or free_port(), list(script) or [Reply()])
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        await receiver.stop()


@pytest.fixture
async def receiver(receivers: Callable[..., Receiver]) -> Receiver:
    """A started receiver that answers 200 to everything."""
    return await receivers().start()


def _on_its_port(aiohttp_client: AiohttpClient, port: int) -> AiohttpClient:
    """Serve every app of the daemon on `port`, the one its config names."""

    async def make(
        app: web.Application, **kw: Any
    ) -> TestClient[web.Request, web.Application]:
        return await aiohttp_client(app, server_kwargs={"port": port}, **kw)

    return cast(AiohttpClient, make)


def _hook_config(standin: StandinHandle, data_dir: Path, **overrides: Any) -> Config:
    return quick_config(
        standin.url, data_dir, port=free_port(), **{**FAST_RETRIES, **overrides}
    )


@pytest.fixture
async def daemon(
    aiohttp_client: AiohttpClient, standin: StandinHandle, tmp_path: Path
) -> AsyncIterator[Daemon]:
    """A daemon on the port its config names (so its default public URL is where
    it listens), with quick webhook retries."""
    config = _hook_config(standin, tmp_path / "data")
    handle = Daemon(_on_its_port(aiohttp_client, config.port), config)
    await handle.start()
    yield handle
    await handle.stop()


def _public_url(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.config.port}"


async def _task(daemon: Daemon, task_id: str) -> dict[str, Any]:
    response = await daemon.client.get(f"{API}/task/{task_id}")
    assert response.status == 200, await response.text()
    task: dict[str, Any] = await response.json()
    return task


async def _task_at(url: str, task_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}{API}/task/{task_id}") as response,
    ):
        assert response.status == 200, await response.text()
        task: dict[str, Any] = await response.json()
        return task


async def enqueue_at(url: str, callback_url: str) -> str:
    """Queue a small txt2img with a callback at a daemon in another process."""
    body = {"prompt": "a cat", "steps": 2, "callback_url": callback_url}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}{API}/queue/txt2img", json=body) as response,
    ):
        assert response.status == 202, await response.text()
        task_id: str = (await response.json())["task_id"]
        return task_id


async def _settled_at(url: str, task_id: str) -> dict[str, Any]:
    """The task at a daemon in another process, once its delivery is final."""

    async def settled() -> dict[str, Any] | None:
        task = await _task_at(url, task_id)
        return task if task["callback"]["delivery"] in FINAL else None

    task: dict[str, Any] = await poll_until(settled)
    return task


async def _wait_callback(
    daemon: Daemon, task_id: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll the task view until its callback passes `check`; return the callback."""

    async def ask() -> dict[str, Any] | None:
        callback = (await _task(daemon, task_id))["callback"]
        return callback if callback is not None and check(callback) else None

    found: dict[str, Any] = await poll_until(ask, timeout_s=WAIT_S)
    return found


async def _settled(daemon: Daemon, task_id: str) -> dict[str, Any]:
    """The task's callback once its delivery is final."""
    return await _wait_callback(daemon, task_id, lambda c: c["delivery"] in FINAL)


def _signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _signed_by(hit: Hit, secret: str) -> bool:
    """Whether the hit carries a valid signature made with `secret`."""
    timestamp = hit.headers.get("X-Inuqueue-Timestamp", "")
    given = hit.headers.get("X-Inuqueue-Signature", "")
    return hmac.compare_digest(given, _signature(secret, timestamp, hit.body))


def _native_payload(task: dict[str, Any], public_url: str) -> dict[str, Any]:
    """The native webhook body the interface page promises for this task view."""
    return {
        "task_id": task["task_id"],
        "status": task["status"],
        "type": task["type"],
        "name": task["name"],
        "images": [
            {
                "digest": image["digest"],
                "url": f"{public_url}{API}/images/{image['digest']}",
            }
            for image in task["images"]
        ],
        "info": task["info"],
        "error": task["error"],
    }


def _check_attempt(
    attempt: dict[str, Any], status_code: int | None, *, final: bool
) -> None:
    assert set(attempt) == {"at", "status_code", "error", "elapsed_ms", "retry_at"}
    assert attempt["status_code"] == status_code, attempt
    datetime.fromisoformat(attempt["at"])
    assert isinstance(attempt["elapsed_ms"], int) and attempt["elapsed_ms"] >= 0
    if status_code is None:
        assert isinstance(attempt["error"], str) and attempt["error"], attempt
    if final:
        assert attempt["retry_at"] is None, attempt
    else:
        assert datetime.fromisoformat(attempt["retry_at"]) >= datetime.fromisoformat(
            attempt["at"]
        )


def _check_native_hit(hit: Hit, task_id: str, attempt: int) -> None:
    assert hit.path == "/hook"
    assert hit.headers["Content-Type"].startswith("application/json")
    assert hit.headers["X-Inuqueue-Task-Id"] == task_id
    assert hit.headers["X-Inuqueue-Attempt"] == str(attempt)


# The outcome of each final status, in the native form


async def test_a_running_task_shows_its_callback_as_pending_and_untried(
    daemon: Daemon, standin: StandinHandle, receiver: Receiver
) -> None:
    task_id = await hold_a_running_task(daemon, standin, {"callback_url": receiver.url})

    callback = (await _task(daemon, task_id))["callback"]
    standin.state.release()

    # Nothing is owed before the task is final: no delivery state yet.
    assert callback == {
        "url": receiver.url,
        "format": "native",
        "delivery": None,
        "tries": 0,
        "attempts": [],
    }
    assert (await _settled(daemon, task_id))["delivery"] == "delivered"


async def test_a_done_task_is_posted_with_images_that_resolve_on_the_daemon(
    daemon: Daemon, receiver: Receiver
) -> None:
    body = {"name": "hooked", "batch_size": 2, "callback_url": receiver.url}
    task_id = await daemon.enqueue(body)
    task = await daemon.wait_status(task_id, "done")

    callback = await _settled(daemon, task_id)

    assert callback["url"] == receiver.url
    assert callback["format"] == "native"
    assert (callback["delivery"], callback["tries"]) == ("delivered", 1)
    assert len(callback["attempts"]) == 1
    _check_attempt(callback["attempts"][0], 200, final=True)
    assert len(receiver.hits) == 1
    hit = receiver.hits[0]
    _check_native_hit(hit, task_id, 1)
    assert "X-Inuqueue-Signature" not in hit.headers
    assert len(task["images"]) == 2
    assert hit.json() == _native_payload(task, _public_url(daemon))
    async with aiohttp.ClientSession() as http:
        for image in hit.json()["images"]:
            async with http.get(image["url"]) as response:
                assert response.status == 200
                data = await response.read()
            assert hashlib.sha256(data).hexdigest() == image["digest"]


async def test_a_failed_task_is_posted_with_its_error(
    daemon: Daemon, standin: StandinHandle, receiver: Receiver
) -> None:
    standin.state.fail_next(1)
    task_id = await daemon.enqueue({"callback_url": receiver.url})
    task = await daemon.wait_status(task_id, "failed")

    callback = await _settled(daemon, task_id)

    assert (callback["delivery"], callback["tries"]) == ("delivered", 1)
    _check_native_hit(receiver.hits[0], task_id, 1)
    payload = receiver.hits[0].json()
    assert payload == _native_payload(task, _public_url(daemon))
    assert payload["status"] == "failed"
    assert payload["error"] and payload["images"] == []


async def test_an_interrupted_task_is_posted_as_interrupted(
    daemon: Daemon, standin: StandinHandle, receiver: Receiver
) -> None:
    standin.state.hold(at_step=2)
    task_id = await daemon.enqueue({"steps": 20, "callback_url": receiver.url})
    await standin.state.wait_held(1)

    deleted = await delete_while_held(daemon, standin, task_id, f"{API}/task/{task_id}")
    assert deleted.status == 200
    task = await daemon.wait_status(task_id, "interrupted")

    callback = await _settled(daemon, task_id)

    assert (callback["delivery"], callback["tries"]) == ("delivered", 1)
    _check_native_hit(receiver.hits[0], task_id, 1)
    payload = receiver.hits[0].json()
    assert payload["status"] == "interrupted"
    assert payload == _native_payload(task, _public_url(daemon))


async def test_a_cancelled_pending_task_is_posted_as_cancelled(
    daemon: Daemon, standin: StandinHandle, receiver: Receiver
) -> None:
    running = await hold_a_running_task(daemon, standin)
    doomed = await daemon.enqueue({"name": "doomed", "callback_url": receiver.url})

    response = await daemon.client.delete(f"{API}/task/{doomed}")
    assert response.status == 200
    task = await daemon.wait_status(doomed, "cancelled")
    callback = await _settled(daemon, doomed)
    standin.state.release()
    await daemon.wait_status(running, "done")

    assert (callback["delivery"], callback["tries"]) == ("delivered", 1)
    _check_native_hit(receiver.hits[0], doomed, 1)
    payload = receiver.hits[0].json()
    assert payload == {
        "task_id": doomed,
        "status": "cancelled",
        "type": "txt2img",
        "name": "doomed",
        "images": [],
        "info": task["info"],
        "error": task["error"],
    }
    assert len(receiver.hits) == 1


async def test_the_callback_url_s_query_string_keeps_its_meaning(
    daemon: Daemon, receiver: Receiver
) -> None:
    # Encoded delimiters must stay data: "&" and "=" inside a value, "+" vs space.
    query = "token=s%2F3cret%26x%3D1&plus=1%2B1&space=a+b"
    url = f"{receiver.url}?{query}"
    task_id = await daemon.enqueue({"callback_url": url})

    callback = await _settled(daemon, task_id)

    assert (callback["url"], callback["delivery"]) == (url, "delivered")
    assert receiver.hits[0].path == "/hook"
    assert parse_qs(receiver.hits[0].query) == {
        "token": ["s/3cret&x=1"],
        "plus": ["1+1"],
        "space": ["a b"],
    }


async def test_image_urls_start_with_the_configured_public_url(
    daemon: Daemon, receiver: Receiver
) -> None:
    public = f"http://127.0.0.1:{free_port()}/behind-a-proxy"
    await daemon.restart(public_url=public)

    task_id = await daemon.enqueue({"callback_url": receiver.url})
    task = await daemon.wait_status(task_id, "done")
    await _settled(daemon, task_id)

    assert task["images"]
    assert receiver.hits[0].json() == _native_payload(task, public)


# The Agent Scheduler form


def _form_parts(hit: Hit) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/form-data body: their headers (lower-case names)
    and their bytes, split by the boundary of the Content-Type."""
    content_type = hit.headers["Content-Type"]
    assert content_type.startswith("multipart/form-data"), content_type
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    assert found, content_type
    delimiter = b"--" + found.group(1).encode()
    chunks = hit.body.split(delimiter)
    assert chunks[-1].strip() == b"--", "no closing boundary"
    parts = []
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, content = chunk[2:-2].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts


def _disposition(headers: dict[str, str]) -> dict[str, str]:
    value = headers["content-disposition"]
    assert value.startswith("form-data"), value
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


async def test_an_agent_scheduler_task_is_posted_as_a_form_with_its_images(
    daemon: Daemon, receiver: Receiver
) -> None:
    body = {"prompt": "a fox", "steps": 2, "batch_size": 2}
    response = await daemon.client.post(
        f"{AS_API}/queue/txt2img", json={**body, "callback_url": receiver.url}
    )
    assert response.status == 200, await response.text()
    task_id = (await response.json())["task_id"]
    task = await daemon.wait_status(task_id, "done")

    callback = await _settled(daemon, task_id)

    assert callback["format"] == "agent-scheduler"
    assert (callback["delivery"], callback["tries"]) == ("delivered", 1)
    hit = receiver.hits[0]
    assert hit.headers["X-Inuqueue-Task-Id"] == task_id
    assert hit.headers["X-Inuqueue-Attempt"] == "1"
    fields: dict[str, str] = {}
    files: list[tuple[dict[str, str], bytes]] = []
    for headers, content in _form_parts(hit):
        params = _disposition(headers)
        if params["name"] == "files":
            files.append((headers | params, content))
        else:
            fields[params["name"]] = content.decode()
    assert fields == {"task_id": task_id, "status": "done"}
    # Two pictures (and the grid the webui puts first when it saves a batch).
    digests = [image["digest"] for image in task["images"]]
    assert len(digests) >= 2
    assert [f["filename"] for f, _ in files] == [f"{d}.png" for d in digests]
    assert [f["content-type"] for f, _ in files] == ["image/png"] * len(digests)
    for digest, (_, content) in zip(digests, files, strict=True):
        assert hashlib.sha256(content).hexdigest() == digest
        stored = await daemon.client.get(f"{API}/images/{digest}")
        assert await stored.read() == content


async def test_a_failed_agent_scheduler_task_is_posted_as_a_form_without_files(
    daemon: Daemon, standin: StandinHandle, receiver: Receiver
) -> None:
    standin.state.fail_next(1)
    response = await daemon.client.post(
        f"{AS_API}/queue/txt2img",
        json={"prompt": "a fox", "steps": 2, "callback_url": receiver.url},
    )
    assert response.status == 200, await response.text()
    task_id = (await response.json())["task_id"]
    await daemon.wait_status(task_id, "failed")

    assert (await _settled(daemon, task_id))["delivery"] == "delivered"

    parts = _form_parts(receiver.hits[0])
    fields = {_disposition(h)["name"]: c.decode() for h, c in parts}
    assert fields == {"task_id": task_id, "status": "failed"}


async def test_a_pending_task_deleted_through_the_agent_scheduler_is_posted(
    daemon: Daemon, standin: StandinHandle, receiver: Receiver
) -> None:
    running = await hold_a_running_task(daemon, standin)
    response = await daemon.client.post(
        f"{AS_API}/queue/txt2img",
        json={"prompt": "a fox", "steps": 2, "callback_url": receiver.url},
    )
    task_id = (await response.json())["task_id"]

    deleted = await daemon.client.delete(f"{AS_API}/task/{task_id}")
    assert await deleted.json() == {"success": True, "message": "Task deleted"}
    await receiver.wait_hits(1)
    standin.state.release()
    await daemon.wait_status(running, "done")

    parts = _form_parts(receiver.hits[0])
    fields = {_disposition(h)["name"]: c.decode() for h, c in parts}
    assert fields == {"task_id": task_id, "status": "cancelled"}


async def test_deleting_a_finished_task_calls_off_its_pending_delivery(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    late = receivers()
    response = await daemon.client.post(
        f"{AS_API}/queue/txt2img",
        json={"prompt": "a fox", "steps": 2, "callback_url": late.url},
    )
    task_id = (await response.json())["task_id"]
    await daemon.wait_status(task_id, "done")
    await _wait_callback(daemon, task_id, lambda c: c["tries"] >= 1)

    deleted = await daemon.client.delete(f"{AS_API}/task/{task_id}")
    assert await deleted.json() == {"success": True, "message": "Task deleted"}
    await daemon.restart()

    # Deleted on purpose: nothing is owed to the receiver any more.
    assert task_id not in daemon.runtime.queue.state.tasks
    assert not daemon.runtime.queue.state.deliveries


async def test_a_delivery_can_be_called_off(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    never = receivers()
    task_id = await daemon.enqueue({"callback_url": never.url})
    await daemon.wait_status(task_id, "done")
    await _wait_callback(daemon, task_id, lambda c: c["tries"] >= 1)

    response = await daemon.client.delete(f"{API}/task/{task_id}/callback")
    assert response.status == 200, await response.text()
    callback = (await response.json())["callback"]
    again = await daemon.client.delete(f"{API}/task/{task_id}/callback")
    refusal = await again.json()
    await daemon.restart()

    assert callback["delivery"] == "cancelled"
    assert (again.status, refusal["error"]) == (409, "task_conflict")
    assert not daemon.runtime.queue.state.deliveries
    assert (await _task(daemon, task_id))["callback"]["delivery"] == "cancelled"
    # Cancelled, it no longer holds the task in the history.
    forgotten = await (await daemon.client.delete(f"{API}/history")).json()
    assert forgotten["task_ids"] == [task_id]


# Retries, rejections and giving up


async def test_a_receiver_that_is_down_gets_it_once_it_comes_up(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    late = receivers()
    task_id = await daemon.enqueue({"callback_url": late.url})
    await daemon.wait_status(task_id, "done")
    before = await _wait_callback(daemon, task_id, lambda c: c["tries"] >= 2)
    assert before["delivery"] == "pending"
    for attempt in before["attempts"]:
        _check_attempt(attempt, None, final=False)

    await late.start()
    callback = await _settled(daemon, task_id)

    assert callback["delivery"] == "delivered"
    assert len(late.hits) == 1
    tries = callback["tries"]
    assert tries >= 3 and len(callback["attempts"]) == tries
    _check_native_hit(late.hits[0], task_id, tries)
    for attempt in callback["attempts"][:-1]:
        _check_attempt(attempt, None, final=False)
    _check_attempt(callback["attempts"][-1], 200, final=True)


async def test_three_500s_then_a_200_is_four_tries_with_a_growing_back_off(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    receiver = await receivers(Reply(500), Reply(500), Reply(500), Reply(200)).start()
    task_id = await daemon.enqueue({"callback_url": receiver.url})
    task = await daemon.wait_status(task_id, "done")

    callback = await _settled(daemon, task_id)

    assert (callback["delivery"], callback["tries"]) == ("delivered", 4)
    assert [a["status_code"] for a in callback["attempts"]] == [500, 500, 500, 200]
    for attempt in callback["attempts"][:-1]:
        _check_attempt(attempt, 500, final=False)
    _check_attempt(callback["attempts"][-1], 200, final=True)
    assert len(receiver.hits) == 4
    for number, hit in enumerate(receiver.hits, start=1):
        _check_native_hit(hit, task_id, number)
        assert hit.json() == _native_payload(task, _public_url(daemon))
    # 0.05 s doubling up to 0.2 s; the next try is sent only after the wait.
    gaps = [b.at - a.at for a, b in zip(receiver.hits, receiver.hits[1:], strict=False)]
    for gap, wait_s in zip(gaps, [0.05, 0.1, 0.2], strict=True):
        assert gap >= wait_s * 0.9, gaps


@pytest.mark.parametrize("status", [503, 408, 429])
async def test_a_transient_status_is_tried_again(
    daemon: Daemon, receivers: Callable[..., Receiver], status: int
) -> None:
    receiver = await receivers(Reply(status), Reply(204)).start()
    task_id = await daemon.enqueue({"callback_url": receiver.url})

    callback = await _settled(daemon, task_id)

    assert (callback["delivery"], callback["tries"]) == ("delivered", 2)
    assert [a["status_code"] for a in callback["attempts"]] == [status, 204]
    assert len(receiver.hits) == 2


async def test_a_receiver_slower_than_the_timeout_is_tried_again(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    await daemon.restart(webhook_timeout_s=0.2)
    receiver = await receivers(Reply(hang=True), Reply(200)).start()
    task_id = await daemon.enqueue({"callback_url": receiver.url})

    callback = await _settled(daemon, task_id)

    assert (callback["delivery"], callback["tries"]) == ("delivered", 2)
    _check_attempt(callback["attempts"][0], None, final=False)
    assert callback["attempts"][0]["elapsed_ms"] >= 150
    assert [h.headers["X-Inuqueue-Attempt"] for h in receiver.hits] == ["1", "2"]


@pytest.mark.parametrize("status", [400, 404, 410, 301])
async def test_a_client_error_or_redirect_is_rejected_and_not_tried_again(
    daemon: Daemon, receivers: Callable[..., Receiver], status: int
) -> None:
    # A redirect points at a path that would accept it: it must not be followed.
    receiver = await receivers(Reply(status, location="/elsewhere"), Reply(200)).start()
    task_id = await daemon.enqueue({"callback_url": receiver.url})
    await daemon.wait_status(task_id, "done")

    callback = await _settled(daemon, task_id)

    assert (callback["delivery"], callback["tries"]) == ("rejected", 1)
    _check_attempt(callback["attempts"][0], status, final=True)
    assert [h.path for h in receiver.hits] == ["/hook"]


@pytest.mark.parametrize("receiver_up", [True, False], ids=["answers-503", "down"])
async def test_delivery_gives_up_when_the_retry_window_is_over(
    daemon: Daemon, receivers: Callable[..., Receiver], receiver_up: bool
) -> None:
    await daemon.restart(webhook_retry_for_s=0.4)
    receiver = receivers(Reply(503))
    if receiver_up:
        await receiver.start()
    task_id = await daemon.enqueue({"callback_url": receiver.url})
    task = await daemon.wait_status(task_id, "done")

    callback = await _settled(daemon, task_id)

    assert callback["delivery"] == "gave_up"
    assert callback["tries"] >= 2 and len(callback["attempts"]) == callback["tries"]
    expected_code = 503 if receiver_up else None
    for attempt in callback["attempts"][:-1]:
        _check_attempt(attempt, expected_code, final=False)
    _check_attempt(callback["attempts"][-1], expected_code, final=True)
    last_try = datetime.fromisoformat(callback["attempts"][-1]["at"])
    finished = datetime.fromisoformat(task["finished_at"])
    # No try is begun long after the window closed (0.4 s plus one back-off).
    assert (last_try - finished).total_seconds() <= 0.4 + 0.3
    if receiver_up:
        assert len(receiver.hits) == callback["tries"]


async def test_the_view_keeps_the_last_20_attempts_and_counts_every_try(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    await daemon.restart(webhook_retry_initial_s=0.001, webhook_retry_max_s=0.001)
    receiver = await receivers(*[Reply(500)] * 22, Reply(200)).start()
    task_id = await daemon.enqueue({"callback_url": receiver.url})

    callback = await _settled(daemon, task_id)

    assert (callback["delivery"], callback["tries"]) == ("delivered", 23)
    assert len(callback["attempts"]) == 20
    assert [a["status_code"] for a in callback["attempts"]] == [500] * 19 + [200]
    assert len(receiver.hits) == 23


# Restarts and crashes


async def test_a_pending_delivery_survives_a_restart(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    late = receivers()
    task_id = await daemon.enqueue({"callback_url": late.url})
    task = await daemon.wait_status(task_id, "done")
    before = await _wait_callback(daemon, task_id, lambda c: c["tries"] >= 1)
    await daemon.stop()

    await late.start()
    await daemon.start()
    callback = await _settled(daemon, task_id)

    assert callback["delivery"] == "delivered"
    assert callback["tries"] > before["tries"]
    # What was journaled before the stop is still there, in order.
    assert callback["attempts"][: before["tries"]] == before["attempts"]
    assert len(late.hits) == 1
    _check_native_hit(late.hits[0], task_id, callback["tries"])
    assert late.hits[0].json() == _native_payload(task, _public_url(daemon))


async def test_a_task_that_finished_just_before_a_crash_is_delivered_after_it(
    daemon: Daemon, receiver: Receiver
) -> None:
    await daemon.stop()
    task = {
        "task_id": "t1",
        "type": "txt2img",
        "name": "crashed",
        "request": {"steps": 1},
        "callback_url": receiver.url,
        "callback_format": "native",
    }
    failed = {"reason": "webui_error", "message": "boom"}
    records: list[dict[str, Any]] = [
        {"op": "enqueue", "task": task},
        {"op": "start", "task_id": "t1"},
        {"op": "finish", "task_id": "t1", "status": "failed", "error": failed},
    ]
    # Just now, so that the retry window is open at the start.
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    lines = [
        encode_record({"seq": seq, "ts": now, **record})
        for seq, record in enumerate(records, start=1)
    ]
    data_dir = daemon.config.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "journal.jsonl").write_bytes(b"".join(lines))

    await daemon.start()
    callback = await _settled(daemon, "t1")

    assert (callback["delivery"], callback["tries"]) == ("delivered", 1)
    assert receiver.hits[0].json() == {
        "task_id": "t1",
        "status": "failed",
        "type": "txt2img",
        "name": "crashed",
        "images": [],
        "info": None,
        "error": failed,
    }


async def test_sigkill_with_a_delivery_pending_loses_it_not(
    standin: StandinHandle,
    tmp_path: Path,
    daemon_processes: Callable[[list[str]], DaemonProcess],
    receivers: Callable[..., Receiver],
) -> None:
    late = receivers()
    args = ["--upstream", standin.url, "--data", str(tmp_path / "data")]
    args += ["--webhook-secret", SECRET]
    first = daemon_processes(args)
    url = await first.start()
    task_id = await enqueue_at(url, late.url)

    async def tried() -> dict[str, Any] | None:
        task = await _task_at(url, task_id)
        tries = task["callback"]["tries"] if task["callback"] else 0
        return task if task["status"] == "done" and tries >= 1 else None

    before = await poll_until(tried)
    assert before["callback"]["delivery"] == "pending"
    await first.kill()
    await late.start()

    second = daemon_processes(args)
    url = await second.start()

    task = await _settled_at(url, task_id)
    callback = task["callback"]
    assert callback["delivery"] == "delivered"
    assert callback["tries"] > before["callback"]["tries"]
    assert len(late.hits) == 1
    hit = late.hits[0]
    _check_native_hit(hit, task_id, callback["tries"])
    assert _signed_by(hit, SECRET)
    payload = hit.json()
    assert (payload["task_id"], payload["status"]) == (task_id, "done")
    assert [i["digest"] for i in payload["images"]] == [
        i["digest"] for i in task["images"]
    ]


async def test_the_cli_takes_the_public_url_flag_and_the_secret_from_the_env(
    standin: StandinHandle,
    tmp_path: Path,
    daemon_processes: Callable[[list[str]], DaemonProcess],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INUQUEUE_WEBHOOK_SECRET", SECRET)
    public = f"http://127.0.0.1:{free_port()}/sd/"
    args = ["--upstream", standin.url, "--data", str(tmp_path), "--public-url", public]
    process = daemon_processes(args)
    url = (await process.start()).rstrip("/")
    task_id = await enqueue_at(url, receiver.url)

    task = await _settled_at(url, task_id)

    assert task["callback"]["delivery"] == "delivered"
    assert _signed_by(receiver.hits[0], SECRET)
    assert task["images"]
    assert receiver.hits[0].json() == _native_payload(task, public.rstrip("/"))


@pytest.mark.parametrize(
    "flags",
    [
        ["--public-url", "127.0.0.1:7861"],
        ["--public-url", "ftp://127.0.0.1/"],
        ["--webhook-retry-for-s", "-1"],
        ["--webhook-retry-for-s", "nan"],
    ],
)
async def test_bad_webhook_flags_are_usage_errors(
    standin: StandinHandle, tmp_path: Path, flags: list[str]
) -> None:
    args = ["serve", "--port", "0", "--upstream", standin.url, "--data", str(tmp_path)]

    # In a thread: the stand-in answers on this loop should the daemon start.
    result = await asyncio.to_thread(run_inuqueue, *args, *flags)

    assert result.returncode == 2, result.stderr
    assert flags[0] in result.stderr


async def test_on_port_0_image_urls_name_the_port_the_daemon_got(
    standin: StandinHandle,
    tmp_path: Path,
    daemon_processes: Callable[[list[str]], DaemonProcess],
    receiver: Receiver,
) -> None:
    process = daemon_processes(["--upstream", standin.url, "--data", str(tmp_path)])
    url = (await process.start()).rstrip("/")
    task_id = await enqueue_at(url, receiver.url)

    task = await _settled_at(url, task_id)

    assert task["callback"]["delivery"] == "delivered"
    payload = receiver.hits[0].json()
    assert payload == _native_payload(task, url)
    async with aiohttp.ClientSession() as http:
        for image in payload["images"]:
            async with http.get(image["url"]) as response:
                assert response.status == 200


async def test_clears_keep_a_task_whose_delivery_is_pending(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    late = receivers()
    task_id = await daemon.enqueue({"callback_url": late.url})
    await daemon.wait_status(task_id, "done")
    await _wait_callback(daemon, task_id, lambda c: c["tries"] >= 1)

    cleared = await daemon.client.delete(f"{API}/history")
    assert cleared.status == 200
    assert (await daemon.client.get(f"{API}/task/{task_id}")).status == 200

    await late.start()
    assert (await _settled(daemon, task_id))["delivery"] == "delivered"
    assert len(late.hits) == 1


async def test_a_compaction_and_the_history_limit_keep_a_pending_delivery(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    await daemon.restart(history_keep=0)
    late = receivers()
    plain = await daemon.enqueue()
    await daemon.wait_status(plain, "done")
    task_id = await daemon.enqueue({"callback_url": late.url})
    await daemon.wait_status(task_id, "done")
    before = await _wait_callback(daemon, task_id, lambda c: c["tries"] >= 1)

    await daemon.runtime.queue.compact()
    await daemon.restart()

    assert (await daemon.client.get(f"{API}/task/{plain}")).status == 404
    kept = (await _task(daemon, task_id))["callback"]
    assert kept["delivery"] == "pending"
    assert kept["attempts"][: before["tries"]] == before["attempts"]
    await late.start()
    callback = await _settled(daemon, task_id)
    assert callback["delivery"] == "delivered"
    _check_native_hit(late.hits[0], task_id, callback["tries"])


async def test_a_stop_during_a_hanging_try_is_prompt_and_the_try_is_made_again(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    await daemon.restart(webhook_timeout_s=60.0)
    receiver = await receivers(Reply(hang=True), Reply(200)).start()
    task_id = await daemon.enqueue({"callback_url": receiver.url})
    await receiver.wait_in_flight(1)

    await asyncio.wait_for(daemon.stop(), 5.0)
    await daemon.start()
    callback = await _settled(daemon, task_id)

    assert callback["delivery"] == "delivered"
    assert len(receiver.hits) == 2
    _check_native_hit(receiver.hits[1], task_id, callback["tries"])
    assert receiver.hits[1].body == receiver.hits[0].body


# "::" listens on IPv6 alone (asyncio sets IPV6_V6ONLY), so its loopback is ::1.
@pytest.mark.parametrize(
    ("host", "loopback"), [("0.0.0.0", "127.0.0.1"), ("::", "[::1]")]
)
async def test_a_wildcard_host_is_named_by_its_loopback_in_image_urls(
    daemon: Daemon, receiver: Receiver, host: str, loopback: str
) -> None:
    await daemon.restart(host=host)
    task_id = await daemon.enqueue({"callback_url": receiver.url})
    task = await daemon.wait_status(task_id, "done")
    await _settled(daemon, task_id)

    assert task["images"]
    expected = f"http://{loopback}:{daemon.config.port}"
    assert receiver.hits[0].json() == _native_payload(task, expected)


# Signatures


async def test_each_try_is_signed_with_the_secret(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    await daemon.restart(webhook_secret=SECRET)
    receiver = await receivers(Reply(500), Reply(200)).start()
    task_id = await daemon.enqueue({"callback_url": receiver.url})

    assert (await _settled(daemon, task_id))["tries"] == 2

    assert len(receiver.hits) == 2
    for hit in receiver.hits:
        timestamp = hit.headers["X-Inuqueue-Timestamp"]
        assert re.fullmatch(r"[0-9]+", timestamp), timestamp
        assert abs(int(timestamp) - time.time()) < 60
        assert hit.headers["X-Inuqueue-Signature"] == _signature(
            SECRET, timestamp, hit.body
        )
        assert _signed_by(hit, SECRET)
        # Negative controls: another secret, another body, another timestamp.
        assert not _signed_by(hit, SECRET + "x")
        tampered = Hit(hit.path, hit.headers, hit.body + b" ", hit.at)
        assert not _signed_by(tampered, SECRET)
        assert hit.headers["X-Inuqueue-Signature"] != _signature(
            SECRET, str(int(timestamp) + 1), hit.body
        )


async def test_without_a_secret_no_signature_is_sent(
    daemon: Daemon, receiver: Receiver
) -> None:
    task_id = await daemon.enqueue({"callback_url": receiver.url})

    assert (await _settled(daemon, task_id))["delivery"] == "delivered"

    assert "X-Inuqueue-Signature" not in receiver.hits[0].headers


# Off the consumer's path


async def test_a_hanging_receiver_does_not_delay_the_next_generation(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    await daemon.restart(webhook_timeout_s=60.0)
    receiver = await receivers(Reply(hang=True)).start()
    first = await daemon.enqueue({"callback_url": receiver.url})
    await receiver.wait_in_flight(1)

    second = await daemon.enqueue({"prompt": "next"})
    await asyncio.wait_for(daemon.wait_status(second, "done"), WAIT_S)

    assert receiver.in_flight == 1
    callback = (await _task(daemon, first))["callback"]
    assert (callback["delivery"], callback["tries"]) == ("pending", 0)
    receiver.release()
    assert (await _settled(daemon, first))["delivery"] == "delivered"


async def test_at_most_four_deliveries_run_at_once(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    await daemon.restart(webhook_timeout_s=60.0)
    receiver = await receivers(Reply(hang=True)).start()
    task_ids = [await daemon.enqueue({"callback_url": receiver.url}) for _ in range(5)]
    for task_id in task_ids:
        await asyncio.wait_for(daemon.wait_status(task_id, "done"), WAIT_S)
    await receiver.wait_in_flight(4)

    receiver.release()
    for task_id in task_ids:
        assert (await _settled(daemon, task_id))["delivery"] == "delivered"

    assert receiver.max_in_flight == 4
    assert sorted(h.headers["X-Inuqueue-Task-Id"] for h in receiver.hits) == sorted(
        task_ids
    )


# Enqueue checks and events


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/hook",
        "/hook",
        "hook",
        "not a url at all",
        "http://",
        "http:///hook",
        "javascript:alert(1)",
        "127.0.0.1:8000/hook",
        "http://127.0.0.1:8000/hook\r\nX-Injected: yes",
        "http://127.0.0.1:8000/a hook",
    ],
)
async def test_a_bad_callback_url_is_refused_and_nothing_is_queued(
    daemon: Daemon, standin: StandinHandle, url: str
) -> None:
    response = await daemon.client.post(
        f"{API}/queue/txt2img", json={"prompt": "a cat", "callback_url": url}
    )

    assert response.status == 422
    assert response.content_type == "application/json"
    answer = await response.json()
    assert answer["error"] == "invalid_callback_url"
    assert answer["message"]
    await _nothing_queued(daemon, standin)


async def test_a_callback_url_that_is_no_string_is_refused(
    daemon: Daemon, standin: StandinHandle
) -> None:
    response = await daemon.client.post(
        f"{API}/queue/txt2img", json={"prompt": "a cat", "callback_url": 8000}
    )

    assert response.status == 422
    assert (await response.json())["message"]
    await _nothing_queued(daemon, standin)


async def test_a_bad_callback_url_is_refused_by_the_agent_scheduler_api(
    daemon: Daemon, standin: StandinHandle
) -> None:
    response = await daemon.client.post(
        f"{AS_API}/queue/txt2img", json={"prompt": "a cat", "callback_url": "/hook"}
    )

    assert response.status == 422
    answer = await response.json()
    assert answer["detail"] and answer["message"]
    await _nothing_queued(daemon, standin)


async def _nothing_queued(daemon: Daemon, standin: StandinHandle) -> None:
    queue = await (await daemon.client.get(f"{API}/queue")).json()
    history = await (await daemon.client.get(f"{API}/history")).json()
    assert (queue["total_pending"], queue["running"]) == (0, [])
    assert history["total"] == 0
    assert standin.state.requests == []


async def test_each_try_is_an_event_on_the_stream(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    receiver = await receivers(Reply(500), Reply(200)).start()
    response = await daemon.client.get(f"{API}/events")
    assert response.status == 200
    stream = EventStream(response)

    task_id = await daemon.enqueue({"callback_url": receiver.url})
    callbacks: list[dict[str, Any]] = []
    while len(callbacks) < 2:
        event = await asyncio.wait_for(stream.next(), WAIT_S)
        if event.get("event") == "callback":
            callbacks.append(event["payload"])
    response.close()

    assert [c["task_id"] for c in callbacks] == [task_id, task_id]
    assert [c["outcome"] for c in callbacks] == ["retrying", "delivered"]
    assert [c["status_code"] for c in callbacks] == [500, 200]


async def test_a_fault_building_a_delivery_is_a_failed_try_with_back_off(
    daemon: Daemon, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Deliverer._body
    faults = {"left": 1}

    async def faulty(self: Deliverer, task: Any) -> tuple[bytes, str]:
        if faults["left"]:
            faults["left"] -= 1
            raise RuntimeError("planted fault")
        return await original(self, task)

    monkeypatch.setattr(Deliverer, "_body", faulty)
    task_id = await daemon.enqueue({"callback_url": receiver.url})
    callback = await _settled(daemon, task_id)

    assert callback["delivery"] == "delivered"
    first, second = callback["attempts"]
    assert (first["status_code"], first["error"]) == (
        None,
        "RuntimeError: planted fault",
    )
    assert first["retry_at"] is not None
    assert second["status_code"] == 200
    assert len(receiver.hits) == 1


async def test_a_try_the_journal_could_not_record_is_recorded_not_made_again(
    daemon: Daemon, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk refuses each "deliver" record three times; the healer brings
    # the journal back after each refusal.
    await daemon.restart(storage_retry_s=0.01)
    journal = daemon.runtime.queue.journal
    real_write = type(journal)._write_and_sync
    refusals = {"left": 3}

    def full_for_deliveries(self: Any, data: bytes) -> None:
        if b'"op":"deliver"' in data and refusals["left"]:
            refusals["left"] -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, data)

    monkeypatch.setattr(type(journal), "_write_and_sync", full_for_deliveries)
    task_id = await daemon.enqueue({"callback_url": receiver.url})

    async def recorded() -> bool | None:
        # Until the journal took the record, a read may show what it refused.
        queue = daemon.runtime.queue
        task = queue.state.tasks[task_id]
        durable = queue.journal.durable_seq == queue.journal.last_seq
        done = not refusals["left"] and durable and task.delivery == "delivered"
        return done or None

    await poll_until(recorded)
    callback = await _settled(daemon, task_id)
    assert (callback["delivery"], callback["tries"]) == ("delivered", 1)
    # The receiver has it once: the refused records did not make it POST again.
    assert len(receiver.hits) == 1
    await daemon.restart()
    assert (await _task(daemon, task_id))["callback"]["delivery"] == "delivered"
