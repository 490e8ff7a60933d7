"""How tasks and images look in inuqueue's JSON answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inuqueue.http import API_PREFIX
from inuqueue.state import QueueState, Task


def image_url(digest: str) -> str:
    """The path under which an image is served."""
    return f"{API_PREFIX}/images/{digest}"


def task_url(task_id: str) -> str:
    """The path of a task."""
    return f"{API_PREFIX}/task/{task_id}"


def image_view(image: dict[str, Any], *, detailed: bool = False) -> dict[str, Any]:
    """One image of a task; `detailed` adds its infotext and seed."""
    view = {
        "digest": image["digest"],
        "url": image_url(image["digest"]),
        "content_type": image["content_type"],
        "bytes": image["bytes"],
    }
    if detailed:
        view["infotext"] = image.get("infotext")
        view["seed"] = image.get("seed")
    return view


def task_view(
    task: Task,
    state: QueueState,
    progress: Mapping[str, dict[str, Any]],
    *,
    with_request: bool = False,
) -> dict[str, Any]:
    """A task as GET /task/{task_id} and the queue listings show it."""
    view: dict[str, Any] = {
        "task_id": task.task_id,
        "type": task.type,
        "status": task.status,
        "name": task.name,
        "priority": task.priority,
        "position": state.position(task),
        "attempts": task.attempts,
        "created_at": task.created_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "images": [image_view(image) for image in task.images],
        "info": task.info,
        "error": task.error,
        "requeued_from": task.requeued_from,
        "requeued_as": task.requeued_as,
        "bookmarked": task.bookmarked,
        "updated_at": task.updated_at,
        "callback": callback_view(task),
    }
    if task.status == "running":
        view["progress"] = progress.get(task.task_id)
        view["interrupt_requested"] = task.interrupt_requested
    if with_request:
        view["request"] = task.request
    return view


def callback_view(task: Task) -> dict[str, Any] | None:
    """Where a task's outcome goes and how its delivery went (None: nowhere)."""
    if task.callback_url is None:
        return None
    return {
        "url": task.callback_url,
        "format": task.callback_format,
        "delivery": task.delivery,
        "tries": task.delivery_tries,
        "attempts": task.delivery_attempts,
    }
