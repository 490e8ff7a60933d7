"""The queue's state as a pure fold of journal records: no I/O, no clock, no loop.

Operations and their keys (besides seq, ts and op):

``enqueue``  ``task``: task_id, type, name, priority, request, idempotency_key
``start``    ``task_id``: the consumer sent it to the webui; attempts + 1
``release``  ``task_id``, ``reason``: it never reached the webui; attempts - 1
``retry``    ``task_id``, ``reason``: the attempt broke off; pending again
``finish``   ``task_id``, ``status`` (done, failed, interrupted), ``images``,
             ``info``, ``error``
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sortedcontainers import SortedList

from inuqueue.errors import InuqueueError

TaskType = Literal["txt2img", "img2img"]
TASK_TYPES: tuple[TaskType, ...] = ("txt2img", "img2img")
STATUSES = ("pending", "running", "done", "failed", "interrupted", "cancelled")
FINAL_STATUSES = frozenset({"done", "failed", "interrupted", "cancelled"})

Record = dict[str, Any]
PendingKey = tuple[int, int, str]


class StateError(InuqueueError, ValueError):
    """A record does not fit the state it is applied to."""


@dataclass(slots=True)
class Task:
    """One queued generation and everything that happened to it."""

    task_id: str
    type: TaskType
    request: dict[str, Any]
    name: str | None
    priority: int
    # Arrival order within a priority; lower runs first.
    rank: int
    created_at: str
    idempotency_key: str | None = None
    status: str = "pending"
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    images: list[dict[str, Any]] = field(default_factory=list)
    info: Any = None
    error: dict[str, Any] | None = None

    @property
    def pending_key(self) -> PendingKey:
        """Sort key of the pending queue: higher priority first, then arrival."""
        return (-self.priority, self.rank, self.task_id)


class QueueState:
    """Every task the journal knows, indexed for the queue's questions."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.pending: SortedList[PendingKey] = SortedList()
        self.running: dict[str, Task] = {}
        self.idempotency: dict[str, str] = {}
        self.last_seq = 0

    def apply(self, record: Record) -> Task:
        """Fold one record into the state and return the task it changed."""
        op = record["op"]
        handler = _HANDLERS.get(op)
        if handler is None:
            raise StateError(f"unknown operation {op!r}")

        task = handler(self, record)
        self.last_seq = record["seq"]
        return task

    def next_pending(self) -> Task | None:
        """The task that runs next, if any."""
        if not self.pending:
            return None
        return self.tasks[self.pending[0][2]]

    def position(self, task: Task) -> int | None:
        """How many pending tasks run before this one (None unless pending)."""
        if task.status != "pending":
            return None
        return int(self.pending.index(task.pending_key))

    def pending_page(self, offset: int, limit: int) -> list[Task]:
        """Pending tasks in the order they will run, sliced."""
        keys = self.pending[offset : offset + limit]
        return [self.tasks[key[2]] for key in keys]

    def get(self, task_id: str) -> Task:
        """The task with this id; StateError if there is none."""
        task = self.tasks.get(task_id)
        if task is None:
            raise StateError(f"no task {task_id!r}")
        return task

    def _enqueue(self, record: Record) -> Task:
        spec = record["task"]
        if spec["task_id"] in self.tasks:
            raise StateError(f"task {spec['task_id']!r} is enqueued twice")

        task = Task(
            task_id=spec["task_id"],
            type=spec["type"],
            request=spec["request"],
            name=spec.get("name"),
            priority=spec.get("priority", 0),
            rank=record["seq"],
            created_at=record["ts"],
            idempotency_key=spec.get("idempotency_key"),
        )
        self.tasks[task.task_id] = task
        self.pending.add(task.pending_key)
        if task.idempotency_key is not None:
            self.idempotency[task.idempotency_key] = task.task_id
        return task

    def _start(self, record: Record) -> Task:
        task = self._expect(record, "pending")
        self.pending.remove(task.pending_key)
        task.status = "running"
        task.attempts += 1
        task.started_at = record["ts"]
        self.running[task.task_id] = task
        return task

    def _back_to_pending(self, record: Record) -> Task:
        task = self._expect(record, "running")
        del self.running[task.task_id]
        task.status = "pending"
        if record["op"] == "release":
            task.attempts -= 1
        self.pending.add(task.pending_key)
        return task

    def _finish(self, record: Record) -> Task:
        task = self._expect(record, "running")
        status = record["status"]
        if status not in FINAL_STATUSES:
            raise StateError(f"{status!r} is not a final status")

        del self.running[task.task_id]
        task.status = status
        task.finished_at = record["ts"]
        task.images = record.get("images") or []
        task.info = record.get("info")
        task.error = record.get("error")
        return task

    def _expect(self, record: Record, status: str) -> Task:
        task = self.get(record["task_id"])
        if task.status != status:
            raise StateError(
                f"{record['op']} of task {task.task_id} needs it {status}, "
                f"but it is {task.status}"
            )
        return task


_HANDLERS = {
    "enqueue": QueueState._enqueue,
    "start": QueueState._start,
    "release": QueueState._back_to_pending,
    "retry": QueueState._back_to_pending,
    "finish": QueueState._finish,
}
