"""The Agent Scheduler's API under /agent-scheduler/v1, over inuqueue's own queue.

Scripts and front ends written for the webui extension keep working against
inuqueue: the same routes, parameters, answer shapes and status codes. Its
conventions are kept, unlike inuqueue's own API: an action answers 200 with
``{"success": bool, "message": str}``, an unknown task is a ``success: false``
rather than a 404, and a request that does not validate is a 422 in FastAPI's
``{"detail": [{"loc", "msg", "type"}]}`` shape (with a ``message`` beside it).
Where the extension misbehaves (an unknown id answering 500, requeue hiding the new
id, edits dropping ``params``), the shape is kept and the right thing done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from inuqueue.agent_results import data_uris, stream_zip
from inuqueue.agent_views import queue_status, task_model
from inuqueue.api import (
    apply_models,
    enqueue_body,
    idempotency_key,
    read_json_object,
    runtime_of,
    store_input,
    store_inputs,
)
from inuqueue.checkpoints import fetch_models
from inuqueue.errors import InuqueueError
from inuqueue.http import ApiError, json_response
from inuqueue.queue import TaskConflict
from inuqueue.state import FINAL_STATUSES, StateError, Task, TaskType
from inuqueue.webhooks import AGENT_SCHEDULER
from inuqueue.webui_schema import request_errors

AS_PREFIX = "/agent-scheduler/v1"
# The extension's page size; 0 means "all", as there.
DEFAULT_LIMIT = 20
# The history the extension lists by default (inuqueue's cancelled is asked for).
_HISTORY_STATUSES = frozenset({"done", "failed", "interrupted"})
_IMAGE_PARAMS = ("init_images", "mask")
_NOT_FOUND = "Task not found"
# The overrides that the checkpoint and vae fields stand for.
_MODEL_OPTIONS = ("sd_model_checkpoint", "sd_vae")

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Invalid(InuqueueError):
    """A request FastAPI would have refused with a 422."""

    def __init__(self, loc: list[Any], msg: str, error_type: str) -> None:
        super().__init__(msg)
        self.detail = [{"loc": loc, "msg": msg, "type": error_type}]


def _ok(message: str, **extra: Any) -> web.Response:
    return json_response({"success": True, "message": message, **extra})


def _refused(message: str) -> web.Response:
    return json_response({"success": False, "message": message})


def _unprocessable(detail: list[dict[str, Any]], message: str) -> web.Response:
    return json_response({"detail": detail, "message": message}, status=422)


def _failed(status: int, message: str) -> web.Response:
    """Any other error, as FastAPI's HTTPException answers: a string detail."""
    return json_response({"detail": message, "message": message}, status=status)


def _extension_errors(handler: Handler) -> Handler:
    """Answer failures in the extension's shapes rather than inuqueue's."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Invalid as exc:
            return _unprocessable(exc.detail, str(exc))
        except TaskConflict as exc:
            return _refused(str(exc))
        except StateError as exc:
            # Another request changed the task while this one was on its way.
            return _refused(f"Task changed meanwhile ({exc}); read it again.")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # Such as aiohttp's 413 for an inflated body over the limit.
            return _failed(exc.status, exc.reason or "The request failed.")
        except ApiError as exc:
            if exc.status not in (400, 422):
                return _failed(exc.status, exc.message)
            detail = exc.extra.get("detail")
            if not isinstance(detail, list):
                field = exc.extra.get("field")
                loc = ["body", field] if field else ["body"]
                if exc.code == "invalid_idempotency_key":
                    loc = ["header", "idempotency-key"]
                detail = [{"loc": loc, "msg": exc.message, "type": exc.code}]
            return _unprocessable(detail, exc.message)

    return wrapped


def _route(method: str, *paths: str) -> Callable[[Handler], Handler]:
    """Register a handler under its path and the extension's deprecated aliases."""

    def register(handler: Handler) -> Handler:
        wrapped = _extension_errors(handler)
        for path in paths:
            routes.route(method, AS_PREFIX + path)(wrapped)
        # Unwrapped, so that a second registration does not wrap it twice.
        return handler

    return register


async def _task(request: web.Request, key: str = "task_id") -> Task | None:
    state = await runtime_of(request).queue.settled()
    return state.tasks.get(request.match_info[key])


def _query_int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _Invalid(
            ["query", name], "value is not a valid integer", "type_error.integer"
        ) from None
    if value < 0:
        raise _Invalid(
            ["query", name],
            "ensure this value is greater than or equal to 0",
            "value_error.number.not_ge",
        )
    return value


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _query_bool(request: web.Request, name: str) -> bool:
    """A query flag as FastAPI reads a bool: true/1/yes/on or false/0/no/off."""
    raw = request.query.get(name, "false").lower()
    if raw not in _TRUE | _FALSE:
        raise _Invalid(
            ["query", name],
            "value could not be parsed to a boolean",
            "type_error.bool",
        )
    return raw in _TRUE


async def _enqueue(request: web.Request, kind: TaskType) -> web.Response:
    try:
        body = await read_json_object(request)
    except ApiError as exc:
        if exc.status == 413:
            raise
        raise _Invalid(["body"], exc.message, "value_error.jsondecode") from None
    # The extension had the webui save every image it made; an explicit false stays.
    body.setdefault("save_images", True)
    inits = body.get("init_images")
    if kind == "img2img" and isinstance(inits, list) and len(inits) > 1:
        # As the extension did: the webui takes at most batch_size input images.
        body["batch_size"] = len(inits)
    runtime = runtime_of(request)
    enqueued = await enqueue_body(
        runtime, kind, body, idempotency_key(request), AGENT_SCHEDULER
    )
    return json_response({"task_id": enqueued.task.task_id})


@_route("POST", "/queue/txt2img")
async def queue_txt2img(request: web.Request) -> web.Response:
    """Queue a txt2img request, as the extension's route does."""
    return await _enqueue(request, "txt2img")


@_route("POST", "/queue/img2img")
async def queue_img2img(request: web.Request) -> web.Response:
    """Queue an img2img request, as the extension's route does."""
    return await _enqueue(request, "img2img")


@_route("GET", "/queue")
async def get_queue(request: web.Request) -> web.Response:
    """The running task and the pending ones, in the order they run."""
    offset = _query_int(request, "offset", 0)
    limit = _query_int(request, "limit", DEFAULT_LIMIT)
    state = await runtime_of(request).queue.settled()
    return json_response(queue_status(state, offset, limit))


@_route("GET", "/history")
async def get_history(request: web.Request) -> web.Response:
    """Finished tasks, newest first; `status` filters as the extension's does."""
    offset = _query_int(request, "offset", 0)
    limit = _query_int(request, "limit", DEFAULT_LIMIT)
    status = request.query.get("status") or "all"
    state = await runtime_of(request).queue.settled()

    tasks: list[Task]
    if status == "pending":
        tasks = state.pending_page(0, len(state.pending))
    elif status == "running":
        tasks = list(state.running.values())
    elif status == "bookmarked":
        finished = (state.tasks[key[1]] for key in state.history)
        tasks = [t for t in finished if t.status in _HISTORY_STATUSES and t.bookmarked]
    else:
        # The indexed history answers a page without walking all of it.
        wanted = _HISTORY_STATUSES if status == "all" else {status}
        known = wanted & FINAL_STATUSES
        page, total = state.history_page(
            known, offset, len(state.history) if limit == 0 else limit
        )
        models = [task_model(task, state) for task in page] if known else []
        return json_response({"tasks": models, "total": total if known else 0})
    page = tasks[offset:] if limit == 0 else tasks[offset : offset + limit]
    return json_response(
        {"tasks": [task_model(task, state) for task in page], "total": len(tasks)}
    )


@_route("GET", "/task/{task_id}")
async def get_task(request: web.Request) -> web.Response:
    """One task, with ISO-8601 times as the extension's route gives them."""
    task = await _task(request)
    if task is None:
        return _refused(_NOT_FOUND)
    state = runtime_of(request).queue.state
    return json_response(
        {"success": True, "data": task_model(task, state, iso_times=True)}
    )


@_route("GET", "/task/{task_id}/position")
async def get_position(request: web.Request) -> web.Response:
    """A task's status and place in the queue (null once it is not pending)."""
    task = await _task(request)
    if task is None:
        return _refused(_NOT_FOUND)
    model = task_model(task, runtime_of(request).queue.state)
    return json_response(
        {
            "success": True,
            "data": {"status": task.status, "position": model["position"]},
        }
    )


@_route("PUT", "/task/{task_id}")
async def update_task(request: web.Request) -> web.Response:
    """Rename a task; change a pending task's checkpoint and its request's params."""
    task = await _task(request)
    try:
        body = await read_json_object(request)
    except ApiError as exc:
        raise _Invalid(["body"], exc.message, "value_error.jsondecode") from None
    if task is None:
        return _refused(_NOT_FOUND)
    name, checkpoint, params = _update_fields(body)

    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if checkpoint is not None or params is not None:
        if task.status != "pending":
            return _refused(
                f"Task is {task.status}; only a pending task's checkpoint and "
                "params can change (requeue it to run it with others)."
            )
        changes.update(await _edited_request(request, task, checkpoint, params))
    await runtime_of(request).queue.update(task, changes)
    return _ok("Task updated.")


def _update_fields(
    body: dict[str, Any],
) -> tuple[str | None, str | None, dict[str, Any] | None]:
    for key in ("name", "checkpoint"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _Invalid(["body", key], "str type expected", "type_error.str")
    params = body.get("params")
    if params is not None and not isinstance(params, dict):
        raise _Invalid(
            ["body", "params"], "value is not a valid dict", "type_error.dict"
        )
    return body.get("name"), body.get("checkpoint"), params


async def _edited_request(
    request: web.Request,
    task: Task,
    checkpoint: str | None,
    params: dict[str, Any] | None,
) -> dict[str, Any]:
    """The `update` fields for a pending task's new checkpoint and params."""
    runtime = runtime_of(request)
    edits = dict(params or {})
    # The listing shows the checkpoint among the params; it is no webui field.
    edits.pop("checkpoint", None)
    images: dict[str, Any] = {}
    if task.type == "img2img":
        # The listing leaves the input images out, so a client that sends back
        # what it read sends none: null or absent keeps the stored ones.
        for key in _IMAGE_PARAMS:
            value = edits.pop(key, None)
            if value is not None:
                images[key] = value
    kept = {k: v for k, v in task.request.items() if k not in images}
    merged = {**kept, **edits}
    checked = {k: v for k, v in merged.items() if k not in _IMAGE_PARAMS}
    errors = request_errors(task.type, {**checked, **images})
    if errors:
        raise _Invalid(errors[0]["loc"], errors[0]["msg"], errors[0]["type"])

    if "init_images" in images:
        await store_inputs(images, runtime.store)
        if len(images["init_images"]) > 1:
            # As at enqueue: the webui takes at most batch_size input images.
            merged["batch_size"] = len(images["init_images"])
    elif "mask" in images:
        images["mask"] = await store_input(images["mask"], "mask", runtime.store)
    merged.update(images)
    _keep_model_overrides(task.request, merged)
    changes: dict[str, Any] = {"request": merged}
    if checkpoint is not None:
        pending_name, _ = await apply_models(runtime, merged, checkpoint, None)
        changes["checkpoint"] = pending_name
    return changes


def _keep_model_overrides(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Carry the checkpoint and VAE over into edited override_settings.

    The extension keeps the checkpoint apart from the params, so an edit of the
    other overrides never loses it; here both live in override_settings.
    """
    before, after = old.get("override_settings"), new.get("override_settings")
    if not isinstance(before, dict) or after is before:
        return
    settings = dict(after) if isinstance(after, dict) else {}
    for option in _MODEL_OPTIONS:
        if option in before and option not in settings:
            settings[option] = before[option]
    new["override_settings"] = settings


@_route("DELETE", "/task/{task_id}")
@_route("POST", "/delete/{task_id}")
async def delete_task(request: web.Request) -> web.Response:
    """Interrupt a running task; cancel and remove any other."""
    runtime = runtime_of(request)
    queue = runtime.queue
    task = await _task(request)
    if task is None:
        return _refused(_NOT_FOUND)
    if task.status == "running":
        await queue.request_interrupt(task)
        if runtime.consumer is not None:
            await runtime.consumer.interrupt(task)
        # As the native DELETE: a script that reads the task next sees it ended.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                queue.wait_until(lambda: task.status in FINAL_STATUSES),
                runtime.config.interrupt_wait_s,
            )
        return _ok("Task interrupted")

    if task.status == "pending":
        # Its receiver hears that it was cancelled: the task stays in the history
        # until that callback went.
        await queue.cancel_pending(task)
    elif task.delivery == "pending":
        # A finished task deleted: its report is not wanted any more.
        await queue.cancel_delivery(task)
    _, orphans = await queue.forget_tasks([task], keep_bookmarked=False)
    runtime.collector.collect_later(orphans)
    return _ok("Task deleted")


@_route("POST", "/task/{task_id}/run", "/run/{task_id}")
async def run_task(request: web.Request) -> web.Response:
    """Run a pending task next."""
    runtime = runtime_of(request)
    task = await _task(request)
    if task is None:
        return _refused(_NOT_FOUND)
    if task.status == "running":
        return _refused("Task is running")
    if task.status != "pending":
        return _refused(f"Task is {task.status}; requeue it to run it again.")

    await runtime.queue.move(task, to="top")
    return _ok("Task is scheduled to run next")


@_route("POST", "/task/requeue-failed")
async def requeue_failed(request: web.Request) -> web.Response:
    """Queue every failed task again (as new tasks; the failed ones stay)."""
    new_ids = await runtime_of(request).queue.requeue_failed()
    if not new_ids:
        return _refused("No failed tasks")
    return _ok(f"Requeued {len(new_ids)} failed tasks", task_ids=new_ids)


@_route("POST", "/task/{task_id}/requeue", "/requeue/{task_id}")
async def requeue_task(request: web.Request) -> web.Response:
    """Queue a finished task's request again; the new id is in the answer."""
    task = await _task(request)
    if task is None:
        return _refused(_NOT_FOUND)
    name = f"Copy of {task.name}" if task.name else None
    enqueued = await runtime_of(request).queue.requeue(task, name=name)
    return _ok("Task requeued", task_id=enqueued.task.task_id)


@_route("POST", "/task/{task_id}/move/{over_id}", "/move/{task_id}/{over_id}")
async def move_task(request: web.Request) -> web.Response:
    """Move a pending task to the top, the bottom, or in front of another."""
    queue = runtime_of(request).queue
    task = await _task(request)
    over_id = request.match_info["over_id"]
    if task is None:
        return _refused(_NOT_FOUND)
    if over_id in ("top", "bottom"):
        await queue.move(task, to=over_id)
        return _ok(f"Task moved to {over_id}")

    other = queue.state.tasks.get(over_id)
    if other is None:
        return _refused(_NOT_FOUND)
    if other is not task:
        await queue.move(task, other=other)
    return _ok("Task moved")


async def _set_bookmark(request: web.Request, bookmarked: bool) -> web.Response:
    task = await _task(request)
    if task is None:
        return _refused(_NOT_FOUND)
    await runtime_of(request).queue.update(task, {"bookmarked": bookmarked})
    return _ok("Task bookmarked" if bookmarked else "Task unbookmarked")


@_route("POST", "/task/{task_id}/bookmark", "/bookmark/{task_id}")
async def bookmark(request: web.Request) -> web.Response:
    """Pin a task: the clears leave it."""
    return await _set_bookmark(request, True)


@_route("POST", "/task/{task_id}/unbookmark", "/unbookmark/{task_id}")
async def unbookmark(request: web.Request) -> web.Response:
    """Unpin a task."""
    return await _set_bookmark(request, False)


@_route("POST", "/task/{task_id}/rename", "/rename/{task_id}")
async def rename(request: web.Request) -> web.Response:
    """Rename a task; the name is the `name` query parameter."""
    name = request.query.get("name")
    if name is None:
        raise _Invalid(["query", "name"], "field required", "value_error.missing")
    task = await _task(request)
    if task is None:
        return _refused(_NOT_FOUND)
    await runtime_of(request).queue.update(task, {"name": name})
    return _ok("Task renamed.")


@_route("GET", "/task/{task_id}/results", "/results/{task_id}")
async def results(request: web.Request) -> web.StreamResponse:
    """A done task's images as data URIs with infotexts, or ?zip=true as a zip."""
    task = await _task(request)
    if task is None:
        return _refused(_NOT_FOUND)
    if task.status != "done":
        return _refused(f"Task is {task.status}")
    store = runtime_of(request).store
    missing = [i["digest"] for i in task.images if not store.exists(i["digest"])]
    if missing:
        return _refused(
            f"Task's image {missing[0]} is not in the store; requeue the task to "
            "make it anew."
        )

    if _query_bool(request, "zip"):
        return await stream_zip(request, store, task)
    return json_response({"success": True, "data": await data_uris(store, task)})


@_route("POST", "/queue/pause", "/pause")
async def pause(request: web.Request) -> web.Response:
    """Start no new task; the running one finishes."""
    await runtime_of(request).queue.set_paused(True)
    return _ok("Queue paused.")


@_route("POST", "/queue/resume", "/resume")
async def resume(request: web.Request) -> web.Response:
    """Start tasks again."""
    await runtime_of(request).queue.set_paused(False)
    return _ok("Queue resumed.")


@_route("POST", "/queue/clear")
async def clear_queue(request: web.Request) -> web.Response:
    """Remove every pending task that is not bookmarked."""
    runtime = runtime_of(request)
    queue = runtime.queue
    cancelled = await queue.clear()
    # Removed, as the extension deletes them, unless a callback is owed.
    found = (queue.state.tasks.get(task_id) for task_id in cancelled)
    _, orphans = await queue.forget_tasks([t for t in found if t is not None])
    runtime.collector.collect_later(orphans)
    return _ok("Queue cleared.")


@_route("POST", "/history/clear")
async def clear_history(request: web.Request) -> web.Response:
    """Remove every finished task that is not bookmarked."""
    runtime = runtime_of(request)
    _, orphans = await runtime.queue.forget(FINAL_STATUSES)
    runtime.collector.collect_later(orphans)
    return _ok("History cleared.")


async def _webui_list(request: web.Request, path: str, key: str) -> web.Response:
    try:
        listed = await fetch_models(runtime_of(request).upstream, path)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ApiError(
            502,
            "upstream_unreachable",
            f"The webui could not be asked for {path} ({exc}); check that it runs.",
        ) from None
    return web.Response(
        body=orjson.dumps([item.get(key) for item in listed if key in item]),
        content_type="application/json",
    )


@_route("GET", "/samplers")
async def samplers(request: web.Request) -> web.Response:
    """The webui's sampler names."""
    return await _webui_list(request, "/sdapi/v1/samplers", "name")


@_route("GET", "/sd-models")
async def sd_models(request: web.Request) -> web.Response:
    """The webui's checkpoint titles."""
    return await _webui_list(request, "/sdapi/v1/sd-models", "title")
