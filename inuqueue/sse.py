"""GET /inuqueue/v1/events: task transitions as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from aiohttp import web

from inuqueue.api import runtime_of
from inuqueue.events import Event
from inuqueue.http import API_PREFIX, ApiError

routes = web.RouteTableDef()

# A comment line this often keeps proxies from closing an idle stream and lets
# the server notice a client that went away.
KEEPALIVE_S = 15.0
# How long a browser's EventSource waits before it reconnects.
RECONNECT_MS = 2000


def format_event(event: Event, *, with_id: bool = True) -> bytes:
    """One event in the text/event-stream format."""
    head = f"id: {event['id']}\n" if with_id else ""
    data = orjson.dumps(event).decode()
    return f"{head}event: {event['type']}\ndata: {data}\n\n".encode()


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ApiError(
            400,
            "invalid_last_event_id",
            "Last-Event-ID must be the id of an event this stream sent (a whole "
            "number); leave it out to get new events only.",
        )
    return value


@routes.get(API_PREFIX + "/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Every transition after Last-Event-ID (or from now), then live ones."""
    hub = runtime_of(request).queue.events
    last = _last_event_id(request)
    if last is None:
        last = hub.durable_seq
    task_filter = request.query.get("task_id") or None

    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(f"retry: {RECONNECT_MS}\n\n".encode())
    sent_progress: dict[str, Event] = {}
    with contextlib.suppress(ConnectionError):
        while not hub.closed:
            wake = hub.changed()
            batch = await hub.after(last)
            for event in batch:
                last = event["id"]
                if task_filter is None or event.get("task_id") == task_filter:
                    await response.write(format_event(event))
            if batch:
                continue

            for task_id, progress in list(hub.progress.items()):
                seen = sent_progress.get(task_id)
                wanted = task_filter is None or task_id == task_filter
                if wanted and seen is not progress:
                    sent_progress[task_id] = progress
                    # Progress is not journaled, so it carries no id to resume from.
                    await response.write(format_event(progress, with_id=False))
            try:
                await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
    return response
