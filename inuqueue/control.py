"""Queue control under /inuqueue/v1: cancel, pause, move, edit, requeue, history."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from inuqueue.api import page_params, read_json_object, runtime_of, task_of, view_of
from inuqueue.http import API_PREFIX, ApiError, json_response
from inuqueue.state import FINAL_STATUSES, Task
from inuqueue.views import task_url

routes = web.RouteTableDef()

_MOVE_FORMS = '{"to": "top"}, {"to": "bottom"}, {"before": id} or {"after": id}'


def _answer(request: web.Request, task: Task, status: int = 200) -> web.Response:
    return json_response(view_of(request, task), status=status)


@routes.delete(API_PREFIX + "/task/{task_id}")
async def cancel_task(request: web.Request) -> web.Response:
    """Cancel a pending task, or interrupt the running one at the webui."""
    runtime = runtime_of(request)
    queue = runtime.queue
    task = await task_of(request)
    if task.status == "pending":
        await queue.cancel_pending(task)
        return _answer(request, task)
    if task.status in FINAL_STATUSES:
        hint = (
            f"; DELETE {API_PREFIX}/task/{task.task_id}/callback stops its callback"
            if task.delivery == "pending"
            else ""
        )
        raise ApiError(
            409,
            "task_conflict",
            f"Task {task.task_id} is {task.status} already, so there is nothing to "
            f"cancel. DELETE {API_PREFIX}/history forgets finished tasks{hint}.",
            status_now=task.status,
        )
    await queue.request_interrupt(task)

    assert runtime.consumer is not None
    await runtime.consumer.interrupt(task)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            queue.wait_until(lambda: task.status in FINAL_STATUSES),
            runtime.config.interrupt_wait_s,
        )
    # 202: the webui has not stopped yet; the task ends interrupted when it does.
    return _answer(request, task, 200 if task.status in FINAL_STATUSES else 202)


@routes.delete(API_PREFIX + "/task/{task_id}/callback")
async def cancel_callback(request: web.Request) -> web.Response:
    """Stop trying to deliver a task's callback (a receiver that will never take
    it); 409 unless a delivery is owed."""
    task = await task_of(request)
    await runtime_of(request).queue.cancel_delivery(task)
    return _answer(request, task)


@routes.post(API_PREFIX + "/queue/pause")
async def pause(request: web.Request) -> web.Response:
    """Start nothing new; the running task finishes."""
    await runtime_of(request).queue.set_paused(True)
    return json_response({"paused": True})


@routes.post(API_PREFIX + "/queue/resume")
async def resume(request: web.Request) -> web.Response:
    """Start tasks again."""
    await runtime_of(request).queue.set_paused(False)
    return json_response({"paused": False})


@routes.post(API_PREFIX + "/task/{task_id}/move")
async def move_task(request: web.Request) -> web.Response:
    """Move a pending task to the top, the bottom, or before or after another."""
    task = await task_of(request)
    body = await read_json_object(request)
    forms = [key for key in ("to", "before", "after") if key in body]
    if len(forms) != 1 or (forms == ["to"] and body["to"] not in ("top", "bottom")):
        raise ApiError(422, "invalid_move", f"Send one of {_MOVE_FORMS}.")

    other = None
    if forms[0] != "to":
        other_id = body[forms[0]]
        if not isinstance(other_id, str):
            raise ApiError(
                422, "invalid_move", f"{forms[0]} takes a task id (a string)."
            )
        other = runtime_of(request).queue.state.tasks.get(other_id)
        if other is None:
            raise ApiError(
                404, "task_not_found", f"There is no task {other_id!r} to move next to."
            )
    await runtime_of(request).queue.move(
        task, to=body.get("to"), other=other, after=forms[0] == "after"
    )
    return _answer(request, task)


@routes.patch(API_PREFIX + "/task/{task_id}")
async def edit_task(request: web.Request) -> web.Response:
    """Rename or bookmark a task, or change a pending task's priority."""
    task = await task_of(request)
    body = await read_json_object(request)
    changes: dict[str, Any] = {}
    if "name" in body:
        if body["name"] is not None and not isinstance(body["name"], str):
            raise ApiError(
                422, "invalid_field", "name must be a string or null.", field="name"
            )
        changes["name"] = body["name"]
    if "priority" in body:
        priority = body["priority"]
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ApiError(
                422,
                "invalid_field",
                "priority must be a whole number within 64 bits.",
                field="priority",
            )
        changes["priority"] = priority
    if "bookmarked" in body:
        if not isinstance(body["bookmarked"], bool):
            raise ApiError(
                422,
                "invalid_field",
                "bookmarked must be true or false.",
                field="bookmarked",
            )
        changes["bookmarked"] = body["bookmarked"]
    if not changes:
        raise ApiError(
            422, "invalid_field", "Send name, priority and/or bookmarked to change."
        )
    await runtime_of(request).queue.update(task, changes)
    return _answer(request, task)


@routes.post(API_PREFIX + "/task/{task_id}/requeue")
async def requeue_task(request: web.Request) -> web.Response:
    """Queue a finished task's request again, as a new task."""
    task = await task_of(request)
    enqueued = await runtime_of(request).queue.requeue(task)
    new_id = enqueued.task.task_id
    return json_response(
        {
            "task_id": new_id,
            "status": enqueued.status,
            "position": enqueued.position,
            "requeued_from": task.task_id,
        },
        status=202,
        headers={"Location": task_url(new_id)},
    )


@routes.post(API_PREFIX + "/queue/requeue-failed")
async def requeue_failed(request: web.Request) -> web.Response:
    """Queue again every failed task that was not queued again yet."""
    new_ids = await runtime_of(request).queue.requeue_failed()
    return json_response({"task_ids": new_ids, "count": len(new_ids)})


@routes.post(API_PREFIX + "/queue/clear")
async def clear_queue(request: web.Request) -> web.Response:
    """Cancel every pending task that is not bookmarked."""
    cancelled = await runtime_of(request).queue.clear()
    return json_response({"cancelled": cancelled, "count": len(cancelled)})


def _statuses(request: web.Request) -> frozenset[str] | None:
    raw = request.query.get("status")
    if raw is None or raw == "":
        return None
    statuses = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = statuses - FINAL_STATUSES
    if unknown:
        raise ApiError(
            400,
            "invalid_query",
            f"status {', '.join(sorted(unknown))} is not a finished status; use "
            f"{', '.join(sorted(FINAL_STATUSES))} (comma-separated).",
        )
    return statuses


@routes.get(API_PREFIX + "/history")
async def history(request: web.Request) -> web.Response:
    """Finished tasks, newest first, filtered by status."""
    statuses = _statuses(request)
    offset, limit = page_params(request)
    state = await runtime_of(request).queue.settled()
    tasks, total = state.history_page(statuses, offset, limit)
    return json_response(
        {"tasks": [view_of(request, task) for task in tasks], "total": total}
    )


@routes.delete(API_PREFIX + "/history")
async def forget_history(request: web.Request) -> web.Response:
    """Forget finished tasks (not the bookmarked, nor those whose callback is
    still being delivered); their images go once nothing points at them."""
    statuses = _statuses(request) or FINAL_STATUSES
    runtime = runtime_of(request)
    forgotten, orphans = await runtime.queue.forget(statuses)
    runtime.collector.collect_later(orphans)
    return json_response({"forgotten": len(forgotten), "task_ids": forgotten})
