"""The task queue: every change goes through the journal, then into the state.

A change is appended to the journal and applied to the in-memory state at once, in
one step of the event loop, so that two requests can never both see the old state;
the caller is answered only after `Journal.wait_durable` for that record returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import structlog

from inuqueue.errors import InuqueueError, JournalCorrupt, JournalError
from inuqueue.events import SNAPSHOT_OPS, EventHub
from inuqueue.journal import JOURNAL_NAME, Journal, JournalReader, Record
from inuqueue.ordering import plan_move
from inuqueue.state import (
    FINAL_STATUSES,
    PENDING_ONLY_FIELDS,
    CallbackFormat,
    QueueState,
    StateError,
    Task,
    TaskType,
)

log = structlog.get_logger("inuqueue.queue")


def keeps(task: Task, *, keep_bookmarked: bool = True) -> bool:
    """Whether the clears and the retention leave a finished task: it is
    bookmarked, or its callback is still owed (forgetting it would lose that)."""
    return (keep_bookmarked and task.bookmarked) or task.delivery == "pending"


def _new_spec(
    task_type: TaskType,
    request: dict[str, Any],
    *,
    name: str | None,
    priority: int,
    idempotency_key: str | None,
    **optional: Any,
) -> Record:
    """The `task` of an enqueue record, with a fresh id; optional keys only when
    they have a value, to keep the journal lean."""
    spec: Record = {
        "task_id": str(uuid.uuid4()),
        "type": task_type,
        "name": name,
        "priority": priority,
        "request": request,
        "idempotency_key": idempotency_key,
    }
    spec.update((key, value) for key, value in optional.items() if value is not None)
    return spec


def _copy_spec(task: Task, name: str | None) -> Record:
    """The enqueue spec of a new task that repeats a finished one."""
    return _new_spec(
        task.type,
        task.request,
        name=task.name if name is None else name,
        priority=task.priority,
        idempotency_key=None,
        requeued_from=task.task_id,
        checkpoint=task.checkpoint,
        vae=task.vae,
        callback_url=task.callback_url,
        callback_format=task.callback_format,
    )


class TaskConflict(InuqueueError):
    """The task is not in a status that allows the change."""

    def __init__(self, message: str, *, task: Task) -> None:
        super().__init__(message)
        self.task = task


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The answer to an enqueue: the task as its record left it."""

    task: Task
    status: str
    position: int | None
    created: bool


class TaskQueue:
    """The durable queue of generation tasks."""

    def __init__(
        self,
        data_dir: Path,
        *,
        max_attempts: int,
        fsync: bool,
        compact_bytes: int = 0,
        history_keep: int | None = None,
        history_max_age_s: float | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.max_attempts = max_attempts
        self.history_keep = history_keep
        self.history_max_age_s = history_max_age_s
        self.state = QueueState()
        reader = JournalReader(data_dir / JOURNAL_NAME)
        self.events = EventHub(reader.path)
        self.replay_orphans: set[str] = set()
        self._replay(reader)
        self.journal = Journal(
            reader.path, reader, fsync=fsync, compact_bytes=compact_bytes
        )
        self.events.floor_seq = reader.snapshot_seq
        self.events.durable_seq = self.journal.durable_seq
        self.journal.on_durable = self._durable
        self._work = asyncio.Event()
        self.stopping = False
        # Replaced by a fresh event after each change; waiters hold the old one.
        self._changed = asyncio.Event()
        # Set when a change touches a task with a callback (the deliverer clears
        # it), so that the deliverer wakes for those alone, not for every change;
        # for a task just made final, once that record is durable.
        self.deliveries_changed = asyncio.Event()
        self._owed_from_seq = 0
        # Monotonic start times of running tasks, for elapsed_ms in the log.
        self._started_mono: dict[str, float] = {}

    def _replay(self, reader: JournalReader) -> None:
        lineno = 0
        # Only the newest records become events the ring keeps; the rest would be
        # built and thrown away.
        recent: deque[Record] = deque(maxlen=self.events.ring_size)
        # Images whose last reference a `forget` record dropped: a daemon that
        # stopped before collecting them leaves them to the next one.
        forgotten: set[str] = set()
        # A replay builds a large, long-lived state: the cyclic collector would
        # walk all of it again and again for nothing (half the replay time).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for lineno, record in enumerate(reader.records(), start=1):  # noqa: B007
                if record["op"] == "forget":
                    gone = self.state.tasks.get(record["task_id"])
                    forgotten.update(gone.digests() if gone is not None else ())
                self.state.apply(record)
                if record["op"] in SNAPSHOT_OPS:
                    self.events.add(record)
                else:
                    recent.append(record)
        except StateError as exc:
            raise JournalCorrupt(reader.path, lineno, str(exc)) from exc
        except (KeyError, TypeError) as exc:
            raise JournalCorrupt(
                reader.path, lineno, f"the record lacks or mistypes {exc}"
            ) from exc
        finally:
            if collecting:
                gc.enable()
        self.replay_orphans = {
            d for d in forgotten if self.state.image_refs.get(d, 0) <= 0
        }
        # What replay built lives as long as the daemon: keep it out of collections.
        gc.freeze()
        for record in recent:
            self.events.add(record)
        log.info(
            "journal.replayed",
            path=str(reader.path),
            records=reader.count,
            tasks=len(self.state.tasks),
            pending=len(self.state.pending),
            running=len(self.state.running),
        )

    def _durable(self, seq: int) -> None:
        self.events.durable(seq)
        if self._owed_from_seq and seq >= self._owed_from_seq:
            self._owed_from_seq = 0
            self.deliveries_changed.set()

    async def open(self) -> None:
        """Start the journal and settle the tasks a stop left running."""
        await self.journal.start()
        await self.open_settle()

    async def compact(self) -> set[str]:
        """Drop history past the retention, then compact the journal (D7).

        Returns the digests that the dropped tasks left without a reference.
        """
        orphans: set[str] = set()
        expired = self._expired_history()
        if expired:
            _, orphans = await self._forget_tasks(expired)
        await self.journal.compact(self.state.snapshot)
        self.events.floor_seq = self.journal.last_seq
        return orphans

    def _expired_history(self) -> list[Task]:
        finished = [self.state.tasks[key[1]] for key in self.state.history]
        finished = [task for task in finished if not keeps(task)]
        expired = finished[self.history_keep :] if self.history_keep is not None else []
        if self.history_max_age_s is not None:
            cutoff = datetime.now(timezone.utc) - timedelta(
                seconds=self.history_max_age_s
            )
            cutoff_iso = cutoff.isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"
            )
            old = [t for t in finished if (t.finished_at or "") < cutoff_iso]
            expired = list({t.task_id: t for t in [*expired, *old]}.values())
        return expired

    async def heal(self) -> None:
        """Make the journal writable again after a failure, or raise OSError.

        The state is rebuilt from the file, so that what the failed write held
        (never acknowledged) is gone from memory too; tasks running on disk are
        settled as at start-up. Call it only while the consumer is idle.
        """
        await self.journal.heal()
        self.state.reset()
        reader = JournalReader(self.journal.path)
        for record in reader.records(cut_torn_tail=False):
            self.state.apply(record)
        self.events.drop_after(self.journal.durable_seq)
        # Seqs after the durable one are given anew: a wait for an old one is void.
        self._owed_from_seq = 0
        self.deliveries_changed.set()
        await self.open_settle()

    async def open_settle(self) -> None:
        """Settle the tasks that the journal says are running: nothing runs yet."""
        for task in list(self.state.running.values()):
            if task.interrupt_requested:
                await self.mark_finished(task, "interrupted")
            else:
                await self._settle_broken_attempt(task, "the daemon stopped during it")
        self._work.set()

    async def close(self) -> None:
        """Flush and close the journal."""
        self.events.close()
        await self.journal.close()

    def _commit(self, op: str, fields: Record) -> tuple[Record, Task]:
        """Append a record and apply it, or raise StateError and append nothing.

        The state checks the record before it is queued: a request that acted on
        a task another request changed meanwhile is refused, never journaled.
        """
        applied: list[Task | None] = []
        record = self.journal.append(
            op, fields, lambda r: applied.append(self.state.apply(r))
        )
        task = applied[0]
        self.events.add(record)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if task is not None and task.callback_url is not None:
            if task.finish_seq == record["seq"]:
                # Owed from now, but reported only once durable: a crash could
                # still take this outcome back.
                self._owed_from_seq = record["seq"]
            else:
                self.deliveries_changed.set()
        # Only queue-wide operations (pause, resume) change no task.
        return record, task  # type: ignore[return-value]

    async def _commit_durable(self, op: str, fields: Record) -> Task | None:
        record, task = self._commit(op, fields)
        await self.journal.wait_durable(record["seq"])
        return task

    async def settled(self) -> QueueState:
        """The state once every change made so far is durable, for readers.

        A reader is never shown a status that a crash could still take back.
        """
        with contextlib.suppress(JournalError):
            await self.journal.wait_durable(self.journal.last_seq)
        return self.state

    async def wait_until(self, predicate: Callable[[], bool]) -> bool:
        """Wait until `predicate()` is true (checked after every change) or the
        daemon stops; returns whether it became true."""
        while not predicate():
            if self.stopping:
                return False
            await self._changed.wait()
        return True

    def begin_stop(self) -> None:
        """The daemon stops: waiters give up (their tasks stay queued)."""
        self.stopping = True
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def enqueue(
        self,
        task_type: TaskType,
        request: dict[str, Any],
        *,
        name: str | None = None,
        priority: int = 0,
        idempotency_key: str | None = None,
        requeued_from: str | None = None,
        checkpoint: str | None = None,
        vae: str | None = None,
        callback_url: str | None = None,
        callback_format: CallbackFormat = "native",
    ) -> Enqueued:
        """Add a task; with a known idempotency key, return the original instead."""
        if idempotency_key is not None:
            known = self.state.idempotency.get(idempotency_key)
            if known is not None:
                task = self.state.tasks[known]
                # The first request may still be waiting for its fsync.
                await self.journal.wait_durable(self.journal.last_seq)
                return Enqueued(task, task.status, self.state.position(task), False)

        spec = _new_spec(
            task_type,
            request,
            name=name,
            priority=priority,
            idempotency_key=idempotency_key,
            requeued_from=requeued_from,
            checkpoint=checkpoint,
            vae=vae,
            callback_url=callback_url,
            callback_format=callback_format if callback_url is not None else None,
        )
        return (await self._enqueue_durable([spec]))[0]

    async def _enqueue_durable(self, specs: list[Record]) -> list[Enqueued]:
        """Commit the enqueue records in one step, then wait for them (one fsync
        for all); what each record made of its task."""
        committed = [self._commit("enqueue", {"task": spec}) for spec in specs]
        # What each acknowledged record made of its task; the consumer may start
        # one before the fsync returns.
        answers = [
            Enqueued(task, task.status, self.state.position(task), True)
            for _, task in committed
        ]
        self._work.set()
        if committed:
            await self.journal.wait_durable(committed[-1][0]["seq"])
        for enqueued in answers:
            log.info(
                "task.enqueued",
                task_id=enqueued.task.task_id,
                type=enqueued.task.type,
                priority=enqueued.task.priority,
                position=enqueued.position,
                requeued_from=enqueued.task.requeued_from,
            )
        return answers

    async def wait_next(self) -> Task:
        """Wait until a task may run and return it (it stays pending)."""
        while True:
            task = None if self.state.paused else self.state.next_pending()
            if task is not None:
                return task
            self._work.clear()
            await self._work.wait()

    async def mark_started(self, task: Task) -> None:
        """Journal that the task goes to the webui now."""
        record, _ = self._commit("start", {"task_id": task.task_id})
        await self.journal.wait_durable(record["seq"])
        self._started_mono[task.task_id] = time.monotonic()
        log.info("task.started", task_id=task.task_id, attempt=task.attempts)

    def release(self, task: Task, reason: str) -> Record:
        """Put a task back unchanged: the webui never got it."""
        self._started_mono.pop(task.task_id, None)
        record, _ = self._commit("release", {"task_id": task.task_id, "reason": reason})
        self._work.set()
        log.info("task.released", task_id=task.task_id, reason=reason)
        return record

    async def mark_broken(self, task: Task, reason: str) -> None:
        """The attempt broke off: pending again, or failed past the attempt limit."""
        await self._settle_broken_attempt(task, reason)

    async def _settle_broken_attempt(self, task: Task, reason: str) -> None:
        if task.attempts < self.max_attempts:
            record, _ = self._commit(
                "retry", {"task_id": task.task_id, "reason": reason}
            )
            self._work.set()
            await self.journal.wait_durable(record["seq"])
            log.info(
                "task.requeued",
                task_id=task.task_id,
                reason=reason,
                attempts=task.attempts,
                elapsed_ms=self._elapsed_ms(task),
            )
            return

        error = {
            "reason": "interrupted",
            "message": (
                f"The generation broke off {task.attempts} times (last: {reason}); "
                "the request may crash the webui. Check the webui's console, then "
                "queue the task again."
            ),
        }
        await self.mark_finished(task, "failed", error=error)

    async def mark_finished(
        self,
        task: Task,
        status: str,
        *,
        images: list[dict[str, Any]] | None = None,
        info: Any = None,
        error: dict[str, Any] | None = None,
        start_next: bool = False,
    ) -> Task | None:
        """Journal the task's outcome; its images are already durable.

        With `start_next`, the next task's `start` goes into the same fsync (the
        consumer's next step anyway), and that task is returned, started.
        """
        fields = {
            "task_id": task.task_id,
            "status": status,
            "images": images or [],
            "info": info,
            "error": error,
        }
        elapsed_ms = self._elapsed_ms(task)
        record, _ = self._commit("finish", fields)
        following = None
        if start_next and not self.stopping and not self.state.paused:
            following = self.state.next_pending()
        if following is not None:
            record, _ = self._commit("start", {"task_id": following.task_id})
        await self.journal.wait_durable(record["seq"])
        self._started_mono.pop(task.task_id, None)
        event = "task.done" if status == "done" else f"task.{status}"
        log_fn = log.info if status == "done" else log.warning
        log_fn(
            event,
            task_id=task.task_id,
            images=len(task.images),
            attempts=task.attempts,
            elapsed_ms=elapsed_ms,
            error=(error or {}).get("reason"),
        )
        if following is not None:
            self._started_mono[following.task_id] = time.monotonic()
            log.info(
                "task.started", task_id=following.task_id, attempt=following.attempts
            )
        return following

    def _elapsed_ms(self, task: Task) -> int | None:
        started = self._started_mono.get(task.task_id)
        if started is None:
            return None
        return round((time.monotonic() - started) * 1000)

    def _conflict(self, task: Task, change: str) -> TaskConflict:
        return TaskConflict(
            f"Task {task.task_id} is {task.status}, so it cannot {change}.",
            task=task,
        )

    async def cancel_pending(self, task: Task) -> None:
        """A pending task becomes cancelled and never runs."""
        if task.status != "pending":
            raise self._conflict(task, "be cancelled as a pending task")
        await self._commit_durable("cancel", {"task_id": task.task_id})
        log.info("task.cancelled", task_id=task.task_id)

    async def request_interrupt(self, task: Task) -> None:
        """Record that a running task is to stop; the consumer stops it."""
        if task.status != "running":
            raise self._conflict(task, "be interrupted")
        if not task.interrupt_requested:
            await self._commit_durable("interrupt", {"task_id": task.task_id})
            log.info("task.interrupting", task_id=task.task_id)

    async def set_paused(self, paused: bool) -> bool:
        """Pause or resume; returns whether anything changed."""
        if self.state.paused == paused:
            return False
        await self._commit_durable("pause" if paused else "resume", {})
        if not paused:
            self._work.set()
        log.info("queue.paused" if paused else "queue.resumed")
        return True

    async def move(
        self,
        task: Task,
        *,
        to: str | None = None,
        other: Task | None = None,
        after: bool = False,
    ) -> None:
        """Move a pending task to the top, the bottom, or next to another one."""
        if task.status != "pending":
            raise self._conflict(task, "move")
        if other is not None and other.status != "pending":
            raise self._conflict(other, "be a place to move to")
        fields = plan_move(self.state, task, to=to, other=other, after=after)
        if fields is None:
            return
        await self._commit_durable("move", {"task_id": task.task_id, **fields})
        log.info("task.moved", task_id=task.task_id, position=self.state.position(task))

    async def update(self, task: Task, changes: dict[str, Any]) -> None:
        """Change a task's name or bookmark (any task), or the priority, request,
        checkpoint or VAE of a pending one."""
        pending_only = [key for key in PENDING_ONLY_FIELDS if key in changes]
        if pending_only and task.status != "pending":
            raise self._conflict(task, f"change {', '.join(pending_only)}")
        if changes:
            await self._commit_durable("update", {"task_id": task.task_id, **changes})
            # A request is too large for a log line; that it changed is enough.
            logged = {
                k: ("changed" if k == "request" else v) for k, v in changes.items()
            }
            log.info("task.updated", task_id=task.task_id, **logged)

    async def cancel_delivery(self, task: Task) -> None:
        """Stop trying to deliver a task's callback."""
        if task.delivery != "pending":
            state = (
                "it has no callback"
                if task.callback_url is None
                else f"its callback is {task.delivery or 'owed once the task ends'}"
            )
            raise TaskConflict(
                f"Task {task.task_id} has no delivery to call off: {state}. Only a "
                "finished task's pending callback can be called off.",
                task=task,
            )
        await self._commit_durable(
            "deliver", {"task_id": task.task_id, "outcome": "cancelled"}
        )
        log.info("callback.cancelled", task_id=task.task_id, tries=task.delivery_tries)

    async def record_delivery(
        self, task: Task, attempt: dict[str, Any], outcome: str | None
    ) -> None:
        """Journal one try to deliver a task's callback, and whether it was the last."""
        current = self.state.tasks.get(task.task_id)
        if current is None or current.delivery != "pending":
            # Forgotten, or already settled, while the try was on its way: a
            # record now would not fit the state it is replayed onto.
            return
        task = current
        await self._commit_durable(
            "deliver", {"task_id": task.task_id, "attempt": attempt, "outcome": outcome}
        )
        log_fn = log.info if outcome in (None, "delivered") else log.warning
        log_fn(
            f"callback.{outcome or 'retrying'}",
            task_id=task.task_id,
            tries=task.delivery_tries,
            status_code=attempt.get("status_code"),
            error=attempt.get("error"),
        )

    async def requeue(self, task: Task, *, name: str | None = None) -> Enqueued:
        """A new pending task with the same request (and callback) as a finished
        one; named `name`, or as the original."""
        if task.status not in FINAL_STATUSES:
            raise self._conflict(task, "be queued again before it finished")
        return (await self._enqueue_durable([_copy_spec(task, name)]))[0]

    async def requeue_failed(self) -> list[str]:
        """Queue again every failed task not queued again yet; the new ids.

        All copies are committed in one step, so that two of these requests at
        once cannot both copy the same task.
        """
        failed = [
            task
            for task in self.state.tasks.values()
            if task.status == "failed" and task.requeued_as is None
        ]
        answers = await self._enqueue_durable([_copy_spec(t, None) for t in failed])
        return [enqueued.task.task_id for enqueued in answers]

    async def clear(self) -> list[str]:
        """Cancel every pending task but the bookmarked; the ids, in the order they
        would have run."""
        tasks = [
            task
            for task in self.state.pending_page(0, len(self.state.pending))
            if not task.bookmarked
        ]
        records = [self._commit("cancel", {"task_id": t.task_id})[0] for t in tasks]
        if records:
            await self.journal.wait_durable(records[-1]["seq"])
        for task in tasks:
            log.info("task.cancelled", task_id=task.task_id, by="clear")
        log.info("queue.cleared", cancelled=len(tasks))
        return [task.task_id for task in tasks]

    async def forget(self, statuses: frozenset[str]) -> tuple[list[str], set[str]]:
        """Forget finished tasks but the kept ones (`keeps`); the ids, and the
        digests nothing points at now."""
        tasks = [self.state.tasks[key[1]] for key in self.state.history]
        return await self.forget_tasks([t for t in tasks if t.status in statuses])

    async def forget_tasks(
        self, tasks: list[Task], *, keep_bookmarked: bool = True
    ) -> tuple[list[str], set[str]]:
        """Forget these finished tasks, but those with a callback still owed (and
        the bookmarked, unless told not to); the ids, and the orphaned digests."""
        for task in tasks:
            if task.status not in FINAL_STATUSES:
                raise self._conflict(task, "be forgotten before it finished")
        return await self._forget_tasks(tasks, keep_bookmarked=keep_bookmarked)

    async def _forget_tasks(
        self, tasks: list[Task], *, keep_bookmarked: bool = True
    ) -> tuple[list[str], set[str]]:
        # The tasks may have been picked before an await: forget those still
        # there, finished and not kept (another request may have changed one).
        live = [self.state.tasks.get(task.task_id) for task in tasks]
        tasks = [
            task
            for task in live
            if task is not None
            and task.status in FINAL_STATUSES
            and not keeps(task, keep_bookmarked=keep_bookmarked)
        ]
        digests = {digest for task in tasks for digest in task.digests()}
        records = [self._commit("forget", {"task_id": t.task_id})[0] for t in tasks]
        if records:
            await self.journal.wait_durable(records[-1]["seq"])
        for task in tasks:
            log.info("task.forgotten", task_id=task.task_id, status=task.status)
        log.info("history.forgotten", tasks=len(tasks))
        orphans = {d for d in digests if self.state.image_refs.get(d, 0) <= 0}
        return [task.task_id for task in tasks], orphans
