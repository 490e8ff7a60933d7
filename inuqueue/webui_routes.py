"""The webui's own POST /sdapi/v1/txt2img and /img2img, served through the queue.

A client written for the webui sends its request as before; inuqueue queues it as a
durable task, waits for it, and answers exactly as the webui would have, with the
images from the store. A client that gives up does not cancel the task.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import orjson
from aiohttp import web

from inuqueue.api import runtime_of, store_inputs
from inuqueue.errors import StoreError
from inuqueue.http import API_PREFIX, ApiError
from inuqueue.runtime import Runtime
from inuqueue.state import FINAL_STATUSES, Task, TaskType
from inuqueue.webui_schema import request_errors, validate_request

routes = web.RouteTableDef()

TASK_ID_HEADER = "X-Inuqueue-Task-Id"


def _webui_json(body: Any, status: int, task: Task | None = None) -> web.Response:
    headers = {TASK_ID_HEADER: task.task_id} if task is not None else None
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _webui_error(status: int, detail: str) -> web.Response:
    """The webui's shape for an HTTPException raised by its own code."""
    body = {"error": "HTTPException", "detail": detail, "body": "", "errors": ""}
    return _webui_json(body, status)


def _failure(error_class: str, message: str, task: Task) -> web.Response:
    """The webui's shape for any other exception (500 naming the class)."""
    body = {"error": error_class, "detail": "", "body": "", "errors": message}
    return _webui_json(body, 500, task)


async def _webui_body(request: web.Request) -> dict[str, Any] | web.Response:
    """The body as FastAPI would take it, or the 422 FastAPI would answer."""
    raw = await request.read()
    if not raw:
        missing = {
            "loc": ["body"],
            "msg": "field required",
            "type": "value_error.missing",
        }
        return _webui_json({"detail": [missing]}, 422)
    try:
        body = json.loads(raw)
    except RecursionError:
        error: dict[str, Any] = {
            "loc": ["body"],
            "msg": "the JSON is nested too deeply",
            "type": "value_error.jsondecode",
        }
        return _webui_json({"detail": [error]}, 422)
    except ValueError as exc:
        position = getattr(exc, "pos", 0)
        error = {
            "loc": ["body", position],
            "msg": str(exc),
            "type": "value_error.jsondecode",
            "ctx": {"msg": getattr(exc, "msg", str(exc)), "pos": position},
        }
        return _webui_json({"detail": [error]}, 422)
    if not isinstance(body, dict):
        error = {
            "loc": ["body"],
            "msg": "value is not a valid dict",
            "type": "type_error.dict",
        }
        return _webui_json({"detail": [error]}, 422)
    return body


@routes.post("/sdapi/v1/txt2img")
@routes.post("/sdapi/v1/txt2img/")
async def txt2img(request: web.Request) -> web.StreamResponse:
    """The webui's txt2img, durable."""
    return await _through_queue(request, "txt2img")


@routes.post("/sdapi/v1/img2img")
@routes.post("/sdapi/v1/img2img/")
async def img2img(request: web.Request) -> web.StreamResponse:
    """The webui's img2img, durable."""
    return await _through_queue(request, "img2img")


async def _through_queue(request: web.Request, kind: TaskType) -> web.StreamResponse:
    runtime = runtime_of(request)
    body = await _webui_body(request)
    if isinstance(body, web.Response):
        return body
    errors = request_errors(kind, body)
    if errors:
        return _webui_json({"detail": errors}, 422)
    if kind == "img2img":
        if body.get("init_images") is None:
            return _webui_error(404, "Init image not found")
        try:
            await store_inputs(body, runtime.store)
        except ApiError:
            return _webui_error(500, "Invalid encoded image")

    key = request.headers.get("Idempotency-Key") or None
    enqueued = await runtime.queue.enqueue(kind, body, idempotency_key=key)
    task = enqueued.task
    if not await runtime.queue.wait_until(lambda: task.status in FINAL_STATUSES):
        detail = (
            f"inuqueue is stopping; task {task.task_id} stays queued and runs after "
            f"the restart (GET {API_PREFIX}/task/{task.task_id}/results)"
        )
        response = _webui_error(503, detail)
        response.headers[TASK_ID_HEADER] = task.task_id
        return response
    return await _answer(request, runtime, task)


async def _answer(
    request: web.Request, runtime: Runtime, task: Task
) -> web.StreamResponse:
    """What the webui would have answered for this task."""
    error = task.error or {}
    if task.status == "cancelled":
        # The webui never cancels; an empty 200 would hide it, so it is an error.
        refusal = _webui_error(
            409, f"task {task.task_id} was cancelled in inuqueue before it ran"
        )
        refusal.headers[TASK_ID_HEADER] = task.task_id
        return refusal
    if task.status == "failed":
        if error.get("reason") == "webui_error" and "status" in error:
            return _webui_json(error.get("body"), int(error["status"]), task)
        return _failure("RuntimeError", str(error.get("message", "")), task)

    response = web.StreamResponse(
        headers={TASK_ID_HEADER: task.task_id, "Content-Type": "application/json"}
    )
    await response.prepare(request)
    # The webui's member order; images are streamed one at a time from the store.
    await response.write(b'{"images":[')
    for index, image in enumerate(task.images):
        try:
            data = await runtime.store.read_verified(image["digest"])
        except (OSError, StoreError):
            # Half an answer cannot become an error any more: break it off.
            if request.transport is not None:
                request.transport.close()
            return response
        encoded = await asyncio.to_thread(base64.b64encode, data)
        await response.write((b',"' if index else b'"') + encoded + b'"')
    parameters = _parameters(task)
    info = task.info if isinstance(task.info, str) else json.dumps(task.info or {})
    await response.write(
        b'],"parameters":'
        + orjson.dumps(parameters)
        + b',"info":'
        + orjson.dumps(info)
        + b"}"
    )
    await response.write_eof()
    return response


def _parameters(task: Task) -> dict[str, Any]:
    """The request model with every field filled in, as the webui echoes it."""
    sent = {**task.request, "force_task_id": task.task_id, "send_images": True}
    values = validate_request(task.type, sent).values
    if task.type == "img2img":
        # The webui leaves the input images out unless asked to include them.
        values["init_images"] = None
        values["mask"] = None
    return values
