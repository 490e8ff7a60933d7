"""The private /_standin/ routes: the test knobs, for a stand-in in another process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from inuqueue.standin.state import STANDIN
from inuqueue.standin.webhttp import RequestInvalid, json_response, read_body
from inuqueue.webui_schema import FieldSpec, validate_fields

# A wait route gives up after this long unless the caller asks otherwise.
DEFAULT_WAIT_TIMEOUT_S = 30.0


async def _knob_values(
    request: web.Request, fields: dict[str, FieldSpec]
) -> dict[str, Any]:
    body = await read_body(request)
    result = validate_fields(fields, {} if body is None else body)
    if result.errors:
        raise RequestInvalid(result.errors)
    return result.values


_COUNT = FieldSpec("int", 1, nullable=False)


async def fail_next(request: web.Request) -> web.StreamResponse:
    """POST {"count": 2, "status": 500}: the next generations fail."""
    fields = {"count": _COUNT, "status": FieldSpec("int", 500, nullable=False)}
    values = await _knob_values(request, fields)
    standin = request.app[STANDIN]
    standin.fail_next(values["count"], values["status"])
    return json_response(standin.stats())


async def drop_next(request: web.Request) -> web.StreamResponse:
    """POST {"count": 1, "after_bytes": 0}: the next replies are cut mid-body."""
    fields = {"count": _COUNT, "after_bytes": FieldSpec("int", 0, nullable=False)}
    values = await _knob_values(request, fields)
    standin = request.app[STANDIN]
    standin.drop_next(values["count"], values["after_bytes"])
    return json_response(standin.stats())


async def delay(request: web.Request) -> web.StreamResponse:
    """POST {"delay_ms": 250}: every later response waits that long first."""
    values = await _knob_values(
        request, {"delay_ms": FieldSpec("float", 0.0, nullable=False)}
    )
    standin = request.app[STANDIN]
    standin.delay_ms = values["delay_ms"]
    return json_response(standin.stats())


async def hold(request: web.Request) -> web.StreamResponse:
    """POST {"at_step": 0, "at_job": 0}: park generations at that step."""
    fields = {
        "at_step": FieldSpec("int", 0, nullable=False),
        "at_job": FieldSpec("int", 0, nullable=False),
    }
    values = await _knob_values(request, fields)
    standin = request.app[STANDIN]
    standin.hold(values["at_step"], values["at_job"])
    return json_response(standin.stats())


async def release(request: web.Request) -> web.StreamResponse:
    """POST: let parked generations go."""
    standin = request.app[STANDIN]
    standin.release()
    return json_response(standin.stats())


async def stats(request: web.Request) -> web.StreamResponse:
    """GET: counters and knob settings."""
    return json_response(request.app[STANDIN].stats())


async def requests_seen(request: web.Request) -> web.StreamResponse:
    """GET: every generation request received, as [path, body] pairs."""
    return json_response([[path, body] for path, body in request.app[STANDIN].requests])


async def wait(request: web.Request) -> web.StreamResponse:
    """POST {"queued"|"started"|"finished"|"held": n}: block until all reached."""
    fields = {
        "queued": FieldSpec("int", 0, nullable=False),
        "started": FieldSpec("int", 0, nullable=False),
        "finished": FieldSpec("int", 0, nullable=False),
        "held": FieldSpec("int", 0, nullable=False),
        "timeout_s": FieldSpec("float", DEFAULT_WAIT_TIMEOUT_S, nullable=False),
    }
    values = await _knob_values(request, fields)
    standin = request.app[STANDIN]
    waits = asyncio.gather(
        standin.wait_queued(values["queued"]),
        standin.wait_generations(values["started"]),
        standin.wait_finished(values["finished"]),
        standin.wait_held(values["held"]),
    )
    try:
        await asyncio.wait_for(waits, values["timeout_s"])
    except TimeoutError:
        return json_response(standin.stats(), status=408)
    return json_response(standin.stats())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KNOB_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "fail-next", fail_next),
    ("POST", "drop-next", drop_next),
    ("POST", "delay", delay),
    ("POST", "hold", hold),
    ("POST", "release", release),
    ("GET", "stats", stats),
    ("GET", "requests", requests_seen),
    ("POST", "wait", wait),
)
