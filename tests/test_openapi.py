"""The OpenAPI document stays true: every route in it, no fault schemathesis finds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from inuqueue.app import create_app
from inuqueue.config import Config
from inuqueue.http import API_PREFIX
from inuqueue.openapi import document
from tests.conftest import free_port

# schemathesis' own strategies draw from `random`, which hypothesis deprecates;
# that is the tool's business, not a fault of the daemon under test.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
)

# Each operation gets this many generated requests: enough to find shape faults.
EXAMPLES_PER_OPERATION = 25


def test_every_own_route_is_documented(tmp_path: Path) -> None:
    app = create_app(Config(data_dir=tmp_path))
    served = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if path.startswith(API_PREFIX) and route.method != "HEAD":
            served.add((path.removeprefix(API_PREFIX), route.method.lower()))
    paths = document()["paths"]
    documented = {
        (path, method)
        for path, item in paths.items()
        for method in item
        if method != "parameters"
    }

    assert served == documented


class ThreadedDaemon:
    """The stand-in and the daemon on their own loop, for a synchronous client."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = ""
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._runners: list[web.AppRunner] = []

    def __enter__(self) -> ThreadedDaemon:
        self._thread.start()
        assert self._ready.wait(30), "the daemon did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def _start(self) -> None:
        # No webui answers: generated requests (steps=10**9 and the like) are
        # queued and stay pending instead of being generated.
        config = Config(
            upstream=f"http://127.0.0.1:{free_port()}",
            data_dir=self.data_dir,
            interrupt_wait_s=1,
        )
        self.url = await self._serve(create_app(config))

    async def _stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedDaemon]:
    with ThreadedDaemon(tmp_path_factory.mktemp("openapi") / "data") as daemon:
        yield daemon


# The event stream never ends by itself; its shape has tests of its own.
schema = schemathesis.openapi.from_dict(document()).exclude(path="/events")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_keeps_to_its_document(case: Any, served: ThreadedDaemon) -> None:
    if isinstance(case.body, dict) and isinstance(case.body.get("callback_url"), str):
        # A generated URL could name any host: callbacks go only to this daemon
        # (which passes them to the stand-in, which refuses them).
        case.body["callback_url"] = served.url + "/hook"
    response = case.call(base_url=served.url + API_PREFIX, timeout=30)
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
