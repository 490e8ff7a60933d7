"""The queue's state as a pure fold of journal records: no I/O, no clock, no loop.

Operations and their keys (besides seq, ts and op):

``enqueue``    ``task``: task_id, type, name, priority, request, idempotency_key,
               requeued_from (the task it repeats, if any), checkpoint and vae
               (names the webui could not be asked about at enqueue),
               callback_url and callback_format (``native``, ``agent-scheduler``)
``start``      ``task_id``: the consumer sent it to the webui; attempts + 1
``release``    ``task_id``, ``reason``: it never reached the webui; attempts - 1
``retry``      ``task_id``, ``reason``: the attempt broke off; pending again
``finish``     ``task_id``, ``status`` (done, failed, interrupted), ``images``,
               ``info``, ``error``
``cancel``     ``task_id``: a pending task will never run
``interrupt``  ``task_id``: a running task is to be stopped; it ends interrupted
``pause``, ``resume``: no new task starts while paused
``move``       ``task_id``, ``priority``, ``rank``, and ``ranks`` ({task_id: rank})
               when the others of that priority had to be renumbered
``update``     ``task_id``, and any of ``name``, ``priority``, ``bookmarked``,
               ``request``, ``checkpoint``, ``vae`` (the last three: pending only)
``forget``     ``task_id``: a finished task leaves the history
``deliver``    ``task_id``, ``attempt`` (one try to POST the outcome to the task's
               callback_url; absent when the delivery was called off) and
               ``outcome``: None while it is tried again, or ``delivered``,
               ``rejected``, ``gave_up``, ``cancelled``
``snapshot``   opens a compacted journal: ``paused``, ``tasks`` (how many follow)
``snapshot_task``  ``task``: one task with every field, as the snapshot saw it
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from sortedcontainers import SortedList

from inuqueue.errors import InuqueueError

TaskType = Literal["txt2img", "img2img"]
# Which API queued a task decides the form its callback takes.
CallbackFormat = Literal["native", "agent-scheduler"]
# pending: owed; the others end a delivery.
Delivery = Literal["pending", "delivered", "rejected", "gave_up", "cancelled"]
TASK_TYPES: tuple[TaskType, ...] = ("txt2img", "img2img")
STATUSES = ("pending", "running", "done", "failed", "interrupted", "cancelled")
FINAL_STATUSES = frozenset({"done", "failed", "interrupted", "cancelled"})
DELIVERY_OUTCOMES = frozenset({"delivered", "rejected", "gave_up", "cancelled"})
# Attempts kept on a task: enough to see a pattern, bounded for a receiver down
# for a day.
KEPT_ATTEMPTS = 20

Record = dict[str, Any]
PendingKey = tuple[int, float, str]
HistoryKey = tuple[int, str]


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
    # Arrival order within a priority; lower runs first. Moves make it fractional.
    rank: float
    created_at: str
    idempotency_key: str | None = None
    status: str = "pending"
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    images: list[dict[str, Any]] = field(default_factory=list)
    info: Any = None
    error: dict[str, Any] | None = None
    interrupt_requested: bool = False
    requeued_from: str | None = None
    requeued_as: str | None = None
    finish_seq: int | None = None
    # Checkpoint and VAE names still to be resolved against the webui at start.
    checkpoint: str | None = None
    vae: str | None = None
    # Pinned: the clears and the history retention leave it alone.
    bookmarked: bool = False
    updated_at: str | None = None
    # Where the outcome is POSTed once final, in which API's form, and how that went:
    # delivery is None (no callback), pending, or one of DELIVERY_OUTCOMES.
    callback_url: str | None = None
    callback_format: CallbackFormat | None = None
    delivery: Delivery | None = None
    delivery_attempts: list[dict[str, Any]] = field(default_factory=list)
    delivery_tries: int = 0

    @property
    def pending_key(self) -> PendingKey:
        """Sort key of the pending queue: higher priority first, then arrival."""
        return (-self.priority, self.rank, self.task_id)

    def digests(self) -> Iterator[str]:
        """Every stored image the task points at: its inputs and its results."""
        for image in self.images:
            yield image["digest"]
        yield from _request_digests(self.type, self.request)


def _request_digests(task_type: str, request: dict[str, Any]) -> Iterator[str]:
    """The stored input images a request points at."""
    if task_type != "img2img":
        # A txt2img body may carry any keys; only img2img inputs are stored.
        return
    inits = request.get("init_images")
    for value in [*(inits if isinstance(inits, list) else []), request.get("mask")]:
        if isinstance(value, dict) and isinstance(value.get("digest"), str):
            yield value["digest"]


class QueueState:
    """Every task the journal knows, indexed for the queue's questions."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (before a replay from the file)."""
        self.tasks: dict[str, Task] = {}
        self.pending: SortedList[PendingKey] = SortedList()
        self.running: dict[str, Task] = {}
        self.idempotency: dict[str, str] = {}
        self.paused = False
        # Finished tasks, newest first: all of them and by status.
        self.history: SortedList[HistoryKey] = SortedList()
        self.history_by_status: dict[str, SortedList[HistoryKey]] = {
            status: SortedList() for status in FINAL_STATUSES
        }
        # How many tasks point at each stored image; 0 means it may be collected.
        self.image_refs: Counter[str] = Counter()
        # Finished tasks whose callback is still to be delivered, oldest first.
        self.deliveries: dict[str, Task] = {}
        self.last_seq = 0

    def apply(self, record: Record) -> Task | None:
        """Fold one record into the state; return the task it changed, if any."""
        op = record["op"]
        handler = _HANDLERS.get(op)
        if handler is None:
            raise StateError(f"unknown operation {op!r}")

        task = handler(self, record)
        if task is not None and op != "snapshot_task":
            task.updated_at = record["ts"]
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

    def snapshot(self) -> list[tuple[str, Record]]:
        """The whole state as records that rebuild it (a compacted journal)."""
        tasks = [
            ("snapshot_task", {"task": {name: getattr(task, name) for name in _FIELDS}})
            for task in self.tasks.values()
        ]
        head = ("snapshot", {"paused": self.paused, "tasks": len(tasks)})
        return [head, *tasks]

    def history_page(
        self, statuses: Iterable[str] | None, offset: int, limit: int
    ) -> tuple[list[Task], int]:
        """Finished tasks newest first, filtered by status, and how many match."""
        wanted = FINAL_STATUSES if statuses is None else frozenset(statuses)
        if wanted >= FINAL_STATUSES:
            keys = list(self.history.islice(offset, offset + limit))
            total = len(self.history)
        else:
            lists = [self.history_by_status[status] for status in wanted]
            total = sum(len(keys) for keys in lists)
            merged = heapq.merge(*(keys.islice(0, offset + limit) for keys in lists))
            keys = list(itertools.islice(merged, offset, offset + limit))
        return [self.tasks[key[1]] for key in keys], total

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
            requeued_from=spec.get("requeued_from"),
            checkpoint=spec.get("checkpoint"),
            vae=spec.get("vae"),
            callback_url=spec.get("callback_url"),
            callback_format=spec.get("callback_format"),
        )
        self.tasks[task.task_id] = task
        self.pending.add(task.pending_key)
        if task.idempotency_key is not None:
            self.idempotency[task.idempotency_key] = task.task_id
        original = self.tasks.get(task.requeued_from or "")
        if original is not None:
            original.requeued_as = task.task_id
        self.image_refs.update(task.digests())
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
        task.images = record.get("images") or []
        task.info = record.get("info")
        task.error = record.get("error")
        self.image_refs.update(image["digest"] for image in task.images)
        self._to_history(task, status, record)
        return task

    def _to_history(self, task: Task, status: str, record: Record) -> None:
        task.status = status
        task.finished_at = record["ts"]
        task.finish_seq = record["seq"]
        key = (-record["seq"], task.task_id)
        self.history.add(key)
        self.history_by_status[status].add(key)
        if task.callback_url is not None:
            task.delivery = "pending"
            self.deliveries[task.task_id] = task

    def _cancel(self, record: Record) -> Task:
        task = self._expect(record, "pending")
        self.pending.remove(task.pending_key)
        self._to_history(task, "cancelled", record)
        return task

    def _interrupt(self, record: Record) -> Task:
        task = self._expect(record, "running")
        task.interrupt_requested = True
        return task

    def _snapshot(self, record: Record) -> None:
        if self.tasks:
            raise StateError("a snapshot must open the journal")
        self.paused = bool(record.get("paused"))

    def _snapshot_task(self, record: Record) -> Task:
        task = Task(**record["task"])
        self.tasks[task.task_id] = task
        if task.status == "pending":
            self.pending.add(task.pending_key)
        elif task.status == "running":
            self.running[task.task_id] = task
        elif task.finish_seq is not None:
            key = (-task.finish_seq, task.task_id)
            self.history.add(key)
            self.history_by_status[task.status].add(key)
        if task.delivery == "pending":
            self.deliveries[task.task_id] = task
        if task.idempotency_key is not None:
            self.idempotency[task.idempotency_key] = task.task_id
        self.image_refs.update(task.digests())
        return task

    def _pause(self, record: Record) -> None:
        self.paused = record["op"] == "pause"

    def _move(self, record: Record) -> Task:
        task = self._expect(record, "pending")
        for task_id, rank in (record.get("ranks") or {}).items():
            self._rekey(self._expect_pending(task_id), rank=rank)
        self._rekey(task, priority=record["priority"], rank=record["rank"])
        return task

    def _update(self, record: Record) -> Task:
        task = self.get(record["task_id"])
        pending_only = [key for key in PENDING_ONLY_FIELDS if key in record]
        if pending_only and task.status != "pending":
            raise StateError(
                f"only a pending task changes {', '.join(pending_only)}: "
                f"{task.task_id} is {task.status}"
            )

        if "name" in record:
            task.name = record["name"]
        if "bookmarked" in record:
            task.bookmarked = bool(record["bookmarked"])
        if "request" in record:
            # Input images are stored before the record that points at them.
            self.image_refs.update(
                digest for digest in _request_digests(task.type, record["request"])
            )
            self._drop_refs(_request_digests(task.type, task.request))
            task.request = record["request"]
        for key in ("checkpoint", "vae"):
            if key in record:
                setattr(task, key, record[key])
        if "priority" in record:
            self._rekey(task, priority=record["priority"])
        return task

    def _deliver(self, record: Record) -> Task:
        task = self.get(record["task_id"])
        if task.delivery != "pending":
            raise StateError(
                f"task {task.task_id} has no callback waiting to be delivered"
            )
        outcome = record.get("outcome")
        if outcome is not None and outcome not in DELIVERY_OUTCOMES:
            raise StateError(f"{outcome!r} is not a delivery outcome")

        if "attempt" in record:
            task.delivery_tries += 1
            task.delivery_attempts.append(record["attempt"])
            del task.delivery_attempts[:-KEPT_ATTEMPTS]
        if outcome is not None:
            task.delivery = outcome
            del self.deliveries[task.task_id]
        return task

    def _forget(self, record: Record) -> Task:
        task = self.get(record["task_id"])
        if task.status not in FINAL_STATUSES or task.finish_seq is None:
            raise StateError(f"only a finished task is forgotten: {task.task_id}")

        key = (-task.finish_seq, task.task_id)
        self.history.remove(key)
        self.history_by_status[task.status].remove(key)
        self._drop_refs(task.digests())
        if task.idempotency_key is not None:
            self.idempotency.pop(task.idempotency_key, None)
        self.deliveries.pop(task.task_id, None)
        del self.tasks[task.task_id]
        return task

    def _drop_refs(self, digests: Iterable[str]) -> None:
        for digest in digests:
            self.image_refs[digest] -= 1
            if self.image_refs[digest] <= 0:
                del self.image_refs[digest]

    def _rekey(
        self, task: Task, *, priority: int | None = None, rank: float | None = None
    ) -> None:
        self.pending.remove(task.pending_key)
        if priority is not None:
            task.priority = priority
        if rank is not None:
            task.rank = rank
        self.pending.add(task.pending_key)

    def _expect_pending(self, task_id: str) -> Task:
        task = self.get(task_id)
        if task.status != "pending":
            raise StateError(f"task {task_id} is {task.status}, not pending")
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
    "cancel": QueueState._cancel,
    "interrupt": QueueState._interrupt,
    "pause": QueueState._pause,
    "resume": QueueState._pause,
    "move": QueueState._move,
    "update": QueueState._update,
    "forget": QueueState._forget,
    "deliver": QueueState._deliver,
    "snapshot": QueueState._snapshot,
    "snapshot_task": QueueState._snapshot_task,
}
_FIELDS = tuple(Task.__dataclass_fields__)
# What an `update` may change of a pending task alone.
PENDING_ONLY_FIELDS = ("priority", "request", "checkpoint", "vae")
