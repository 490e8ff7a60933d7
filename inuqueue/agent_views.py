"""How tasks look to Agent Scheduler clients: its `TaskModel` and queue status.

The Agent Scheduler (the webui extension) keeps a task as a database row; its
clients read that row's columns. The same columns are made here from an inuqueue
task, so that scripts written against the extension read them unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from inuqueue.state import QueueState, Task
from inuqueue.views import image_url

# Left out of `params`, as the extension leaves them out: they are large.
_HIDDEN_PARAMS = frozenset({"alwayson_scripts", "script_args", "init_images", "mask"})


def epoch_ms(iso: str | None) -> int | None:
    """An ISO-8601 journal time as epoch milliseconds."""
    if iso is None:
        return None
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return round(moment.timestamp() * 1000)


def checkpoint_of(task: Task) -> str | None:
    """The checkpoint the task asks for: resolved, or the name still to resolve."""
    if task.checkpoint is not None:
        return task.checkpoint
    settings = task.request.get("override_settings")
    if isinstance(settings, dict):
        value = settings.get("sd_model_checkpoint")
        return value if isinstance(value, str) else None
    return None


def result_of(task: Task) -> str | None:
    """The extension's `result` column: a JSON string for a done task, the error
    message for a failed one, else null (as there, also for an interrupted task;
    its partial images are in the native API)."""
    if task.status == "failed":
        error = task.error or {}
        return str(error.get("message") or error.get("reason") or "failed")
    if task.status != "done":
        return None
    images = [image_url(image["digest"]) for image in task.images]
    return orjson.dumps({"images": images, "geninfo": task.info}).decode()


def as_position(state: QueueState, task: Task) -> int | None:
    """The place in the extension's pending list, where running tasks come first."""
    position = state.position(task)
    return None if position is None else position + len(state.running)


def task_model(
    task: Task, state: QueueState, *, iso_times: bool = False
) -> dict[str, Any]:
    """A task as the extension's TaskModel: epoch-ms times, or ISO strings."""
    params = {k: v for k, v in task.request.items() if k not in _HIDDEN_PARAMS}
    params["checkpoint"] = checkpoint_of(task)
    created: Any = task.created_at
    updated: Any = task.updated_at or task.created_at
    if not iso_times:
        created, updated = epoch_ms(created), epoch_ms(updated)
    return {
        "id": task.task_id,
        "api_task_id": None,
        "api_task_callback": task.callback_url,
        "name": task.name,
        "type": task.type,
        "status": task.status,
        "params": params,
        "priority": task.priority,
        "position": as_position(state, task),
        "result": result_of(task),
        "bookmarked": task.bookmarked,
        "created_at": created,
        "updated_at": updated,
    }


def queue_status(state: QueueState, offset: int, limit: int) -> dict[str, Any]:
    """The extension's QueueStatusResponse: running tasks first, then pending."""
    running = list(state.running.values())
    total = len(running) + len(state.pending)
    end = total if limit == 0 else min(total, offset + limit)
    listed = running[offset:end]
    if end > len(running):
        start = max(0, offset - len(running))
        listed += state.pending_page(start, end - len(running) - start)
    models = []
    for index, task in enumerate(listed):
        model = task_model(task, state)
        model["position"] = offset + index
        models.append(model)
    return {
        "current_task_id": running[0].task_id if running else None,
        "pending_tasks": models,
        "total_pending_tasks": total,
        "paused": state.paused,
    }
