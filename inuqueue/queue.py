"""The task queue: every change goes through the journal, then into the state.

A change is appended to the journal and applied to the in-memory state at once, in
one step of the event loop, so that two requests can never both see the old state;
the caller is answered only after `Journal.wait_durable` for that record returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from inuqueue.errors import InuqueueError, JournalCorrupt, JournalError
from inuqueue.journal import JOURNAL_NAME, Journal, JournalReader, Record
from inuqueue.state import QueueState, StateError, Task, TaskType

log = structlog.get_logger("inuqueue.queue")


class TaskConflict(InuqueueError):
    """The task is not in a status that allows the change."""


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The answer to an enqueue: the task as its record left it."""

    task: Task
    status: str
    position: int | None
    created: bool


class TaskQueue:
    """The durable queue of generation tasks."""

    def __init__(self, data_dir: Path, *, max_attempts: int, fsync: bool) -> None:
        self.data_dir = data_dir
        self.max_attempts = max_attempts
        self.state = QueueState()
        reader = JournalReader(data_dir / JOURNAL_NAME)
        self._replay(reader)
        self.journal = Journal(reader.path, reader, fsync=fsync)
        self._work = asyncio.Event()
        # Replaced by a fresh event after each change; waiters hold the old one.
        self._changed = asyncio.Event()
        # Monotonic start times of running tasks, for elapsed_ms in the log.
        self._started_mono: dict[str, float] = {}

    def _replay(self, reader: JournalReader) -> None:
        lineno = 0
        try:
            for lineno, record in enumerate(reader.records(), start=1):  # noqa: B007
                self.state.apply(record)
        except StateError as exc:
            raise JournalCorrupt(reader.path, lineno, str(exc)) from exc
        log.info(
            "journal.replayed",
            path=str(reader.path),
            records=reader.count,
            tasks=len(self.state.tasks),
            pending=len(self.state.pending),
            running=len(self.state.running),
        )

    async def open(self) -> None:
        """Start the journal and settle the tasks a stop left running."""
        await self.journal.start()
        for task in list(self.state.running.values()):
            await self._settle_broken_attempt(task, "the daemon stopped during it")
        self._work.set()

    async def close(self) -> None:
        """Flush and close the journal."""
        await self.journal.close()

    def _commit(self, op: str, fields: Record) -> tuple[Record, Task]:
        record = self.journal.append(op, fields)
        task = self.state.apply(record)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return record, task

    async def settled(self) -> QueueState:
        """The state once every change made so far is durable, for readers.

        A reader is never shown a status that a crash could still take back.
        """
        with contextlib.suppress(JournalError):
            await self.journal.wait_durable(self.journal.last_seq)
        return self.state

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` is true; it is checked after every change."""
        while not predicate():
            await self._changed.wait()

    async def enqueue(
        self,
        task_type: TaskType,
        request: dict[str, Any],
        *,
        name: str | None = None,
        priority: int = 0,
        idempotency_key: str | None = None,
    ) -> Enqueued:
        """Add a task; with a known idempotency key, return the original instead."""
        if idempotency_key is not None:
            known = self.state.idempotency.get(idempotency_key)
            if known is not None:
                task = self.state.tasks[known]
                # The first request may still be waiting for its fsync.
                await self.journal.wait_durable(self.journal.last_seq)
                return Enqueued(task, task.status, self.state.position(task), False)

        spec = {
            "task_id": str(uuid.uuid4()),
            "type": task_type,
            "name": name,
            "priority": priority,
            "request": request,
            "idempotency_key": idempotency_key,
        }
        record, task = self._commit("enqueue", {"task": spec})
        # What the acknowledged record made of the task; the consumer may start it
        # before the fsync returns.
        enqueued = Enqueued(task, task.status, self.state.position(task), True)
        self._work.set()
        await self.journal.wait_durable(record["seq"])
        log.info(
            "task.enqueued",
            task_id=task.task_id,
            type=task_type,
            priority=priority,
            position=enqueued.position,
        )
        return enqueued

    async def wait_next(self) -> Task:
        """Wait until a task is ready to run and return it (it stays pending)."""
        while True:
            task = self.state.next_pending()
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
    ) -> None:
        """Journal the task's outcome; its images are already durable."""
        fields = {
            "task_id": task.task_id,
            "status": status,
            "images": images or [],
            "info": info,
            "error": error,
        }
        elapsed_ms = self._elapsed_ms(task)
        record, _ = self._commit("finish", fields)
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

    def _elapsed_ms(self, task: Task) -> int | None:
        started = self._started_mono.get(task.task_id)
        if started is None:
            return None
        return round((time.monotonic() - started) * 1000)
