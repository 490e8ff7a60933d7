"""Shared fixtures: a stand-in webui and a daemon in front of it, both real servers."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer

from inuqueue.app import create_app
from inuqueue.config import Config
from inuqueue.runtime import RUNTIME, Runtime
from inuqueue.standin import STANDIN, Standin, StandinConfig, create_standin_app

API = "/inuqueue/v1"
# Bounds for waits on a daemon in another process; in-process waits need none.
PROCESS_START_TIMEOUT_S = 30.0
PROCESS_WAIT_TIMEOUT_S = 30.0
REPO = Path(__file__).resolve().parent.parent


@dataclass
class StandinHandle:
    """A running stand-in webui."""

    server: TestServer
    state: Standin
    url: str


@pytest.fixture
async def standin(aiohttp_server: AiohttpServer) -> StandinHandle:
    """A stand-in webui on a free loopback port, 1 ms per sampling step."""
    app = create_standin_app(StandinConfig(step_ms=1))
    server = await aiohttp_server(app)
    return StandinHandle(server, app[STANDIN], str(server.make_url("")).rstrip("/"))


class Daemon:
    """The daemon on a real loopback port; restartable on the same data directory."""

    def __init__(self, aiohttp_client: AiohttpClient, config: Config) -> None:
        self._aiohttp_client = aiohttp_client
        self.config = config
        self._client: TestClient[web.Request, web.Application] | None = None

    async def start(self, **overrides: Any) -> TestClient[web.Request, web.Application]:
        """Start it, with settings changed by `overrides`."""
        if overrides:
            self.config = replace(self.config, **overrides)
        self._client = await self._aiohttp_client(create_app(self.config))
        return self._client

    async def stop(self) -> None:
        """Stop it gracefully."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def restart(
        self, **overrides: Any
    ) -> TestClient[web.Request, web.Application]:
        """Stop it and start it again on the same data."""
        await self.stop()
        return await self.start(**overrides)

    @property
    def client(self) -> TestClient[web.Request, web.Application]:
        """The HTTP client of the running daemon."""
        assert self._client is not None
        return self._client

    @property
    def runtime(self) -> Runtime:
        """The daemon's live parts."""
        return self.client.app[RUNTIME]

    async def enqueue(
        self, body: dict[str, Any] | None = None, kind: str = "txt2img", **kw: Any
    ) -> str:
        """Queue a task and return its id."""
        payload = {"prompt": "a cat", "steps": 2, **(body or {})}
        response = await self.client.post(f"{API}/queue/{kind}", json=payload, **kw)
        assert response.status == 202, await response.text()
        return str((await response.json())["task_id"])

    async def wait_status(self, task_id: str, *statuses: str) -> dict[str, Any]:
        """Wait until the task reaches one of `statuses`; return its JSON."""
        queue = self.runtime.queue
        await queue.wait_until(lambda: queue.state.tasks[task_id].status in statuses)
        response = await self.client.get(f"{API}/task/{task_id}")
        task: dict[str, Any] = await response.json()
        return task


def quick_config(upstream: str, data_dir: Path, **overrides: Any) -> Config:
    """Settings for a daemon under test: quick retries, no grace at a stop."""
    settings: dict[str, Any] = {
        "retry_initial_s": 0.01,
        "retry_max_s": 0.05,
        "shutdown_grace_s": 0.0,
        **overrides,
    }
    return Config(upstream=upstream, data_dir=data_dir, **settings)


async def started_daemon(
    aiohttp_client: AiohttpClient, upstream: str, data_dir: Path, **overrides: Any
) -> Daemon:
    """A started daemon in front of `upstream` (the caller stops it)."""
    daemon = Daemon(aiohttp_client, quick_config(upstream, data_dir, **overrides))
    await daemon.start()
    return daemon


async def hold_a_running_task(
    daemon: Daemon, standin: StandinHandle, body: dict[str, Any] | None = None
) -> str:
    """Queue a task and hold it at the stand-in, running, until `release()`."""
    standin.state.hold()
    task_id = await daemon.enqueue(body)
    await standin.state.wait_generations(1)
    return task_id


async def delete_while_held(
    daemon: Daemon, standin: StandinHandle, task_id: str, path: str
) -> ClientResponse:
    """DELETE a task held running at the stand-in; answer once the webui stopped it.

    The DELETE sends the interrupt itself; sending it again (it is idempotent) is
    how the caller knows the webui heard it before the hold is released.
    """
    deleting = asyncio.create_task(daemon.client.delete(path))
    queue = daemon.runtime.queue
    await queue.wait_until(lambda: queue.state.tasks[task_id].interrupt_requested)
    consumer = daemon.runtime.consumer
    assert consumer is not None
    await consumer.interrupt(queue.state.tasks[task_id])
    assert standin.state.state.interrupted
    standin.state.release()
    return await deleting


@pytest.fixture
def daemon_config(standin: StandinHandle, tmp_path: Path) -> Config:
    """Settings for a daemon in front of the stand-in, with quick retries."""
    return quick_config(standin.url, tmp_path / "data")


@pytest.fixture
async def daemon(
    aiohttp_client: AiohttpClient, daemon_config: Config
) -> AsyncIterator[Daemon]:
    """A started daemon in front of the stand-in."""
    handle = Daemon(aiohttp_client, daemon_config)
    await handle.start()
    yield handle
    await handle.stop()


# A one-shot command either ends at once or is stopped by this bound.
RUN_TIMEOUT_S = 30


def run_inuqueue(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m inuqueue ARGS` to its end; its output is captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "inuqueue", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    """A loopback port nothing listens on at the moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DaemonProcess:
    """`python -m inuqueue serve` in a child process, for kills and the CLI."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.log: list[dict[str, Any]] = []

    async def start(self) -> str:
        """Start it and return the URL it logs as listening."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "inuqueue",
            "serve",
            "--port",
            "0",
            "--log-format",
            "json",
            *self.args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        entry = await self.wait_log(lambda e: e.get("event") == "listening")
        self.url = str(entry["url"])
        return self.url

    async def wait_log(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Read the log until a line matches; fail after a bounded time."""
        assert self.proc is not None and self.proc.stderr is not None
        deadline = time.monotonic() + PROCESS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(
                self.proc.stderr.readline(), deadline - time.monotonic()
            )
            if not line:
                break
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                entry = {"event": "text", "text": line.decode(errors="replace")}
            self.log.append(entry)
            if match(entry):
                return dict(entry)
        raise AssertionError(f"no matching log line; saw {self.log[-5:]}")

    async def kill(self) -> None:
        """SIGKILL it and reap it."""
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> None:
        """Stop it if it still runs."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def daemon_processes() -> AsyncIterator[Callable[[list[str]], DaemonProcess]]:
    """Make daemon processes that are killed when the test ends."""
    made: list[DaemonProcess] = []

    def make(args: list[str]) -> DaemonProcess:
        process = DaemonProcess(args)
        made.append(process)
        return process

    yield make
    for process in made:
        await process.stop()


async def poll_until(
    check: Callable[[], Any], *, timeout_s: float = PROCESS_WAIT_TIMEOUT_S
) -> Any:
    """Await `check()` until it returns something truthy, within a bound.

    Only for a daemon in another process, whose state can only be asked over HTTP.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {timeout_s} s")


def tiny_png(width: int = 8, height: int = 8, shade: int = 0) -> bytes:
    """A small valid RGB PNG, made by hand so that inputs need no library."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = b"\x00" + bytes([shade % 256, 80, 160]) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


async def wait_progress(
    daemon: Daemon, task_id: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Wait until the task's live progress passes `check`; return it."""
    hub = daemon.runtime.queue.events
    while True:
        changed = hub.changed()
        progress = hub.progress.get(task_id)
        if progress is not None and check(progress):
            return progress
        await changed.wait()
