"""A stateful property test: the journal-backed queue always equals a simple model.

Rules enqueue (with a callback or not), start, finish, break off, cancel, move,
pause, bookmark, record and call off deliveries, clear, forget, compact, restart,
kill and tear the journal's tail; after each, the queue's tasks, their statuses,
bookmarks and deliveries and the pending order must be what a few lines of plain
Python say they should be.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from inuqueue.journal import JOURNAL_NAME
from inuqueue.queue import TaskQueue
from inuqueue.state import FINAL_STATUSES

MAX_ATTEMPTS = 2
# Never contacted: the machine drives the queue alone, with no deliverer running.
HOOK = "http://127.0.0.1:9/hook"


@dataclass
class ModelTask:
    """What the model knows of a task."""

    status: str
    priority: int
    rank: float
    attempts: int = 0
    hooked: bool = False
    bookmarked: bool = False
    delivery: str | None = None
    tries: int = 0

    def becomes(self, status: str) -> None:
        """Take a status; a final one makes a callback owed."""
        self.status = status
        if status in FINAL_STATUSES and self.hooked:
            self.delivery = "pending"


class QueueMachine(RuleBasedStateMachine):
    """Drives a TaskQueue on a real journal beside a dictionary model."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="inuqueue-sm-"))
        self.model: dict[str, ModelTask] = {}
        self.paused = False
        self.arrivals = 0
        self.queue = self._open()

    def _run(self, coro: object) -> object:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def _open(self) -> TaskQueue:
        queue = TaskQueue(self.dir, max_attempts=MAX_ATTEMPTS, fsync=False)
        self._run(queue.open())
        return queue

    def _pending_order(self) -> list[str]:
        pending = [
            (t.priority, t.rank, i)
            for i, t in self.model.items()
            if t.status == "pending"
        ]
        return [i for _, _, i in sorted(pending, key=lambda k: (-k[0], k[1], k[2]))]

    def _settle_running(self) -> None:
        """A restart: a running task runs again, or fails past the limit."""
        for task in self.model.values():
            if task.status == "running":
                task.becomes("pending" if task.attempts < MAX_ATTEMPTS else "failed")

    def teardown(self) -> None:
        self._run(self.queue.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(priority=st.integers(-2, 2), hooked=st.booleans())
    def enqueue(self, priority: int, hooked: bool) -> None:
        enqueued = self._run(
            self.queue.enqueue(
                "txt2img",
                {"prompt": "p"},
                priority=priority,
                callback_url=HOOK if hooked else None,
            )
        )
        task = enqueued.task  # type: ignore[attr-defined]
        self.arrivals += 1
        self.model[task.task_id] = ModelTask(
            "pending", priority, task.rank, hooked=hooked
        )

    @precondition(lambda self: not self.paused and not self._running())
    @rule()
    def start(self) -> None:
        order = self._pending_order()
        if not order:
            return
        task = self.queue.state.next_pending()
        assert task is not None and task.task_id == order[0]
        self._run(self.queue.mark_started(task))
        self.model[task.task_id].status = "running"
        self.model[task.task_id].attempts += 1

    def _running(self) -> list[str]:
        return [i for i, t in self.model.items() if t.status == "running"]

    @precondition(lambda self: bool(self._running()))
    @rule(status=st.sampled_from(["done", "failed", "interrupted"]))
    def finish(self, status: str) -> None:
        (task_id,) = self._running()
        self._run(self.queue.mark_finished(self.queue.state.tasks[task_id], status))
        self.model[task_id].becomes(status)

    @precondition(lambda self: bool(self._running()))
    @rule()
    def break_off(self) -> None:
        (task_id,) = self._running()
        self._run(self.queue.mark_broken(self.queue.state.tasks[task_id], "reset"))
        model = self.model[task_id]
        model.becomes("pending" if model.attempts < MAX_ATTEMPTS else "failed")

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        order = self._pending_order()
        if not order:
            return
        task_id = data.draw(st.sampled_from(order))
        self._run(self.queue.cancel_pending(self.queue.state.tasks[task_id]))
        self.model[task_id].becomes("cancelled")

    @rule(data=st.data(), to=st.sampled_from(["top", "bottom"]))
    def move(self, data: st.DataObject, to: str) -> None:
        order = self._pending_order()
        if len(order) < 2:
            return
        task_id = data.draw(st.sampled_from(order))
        others = [self.model[i] for i in order if i != task_id]
        # Top: the first task's priority, ahead of every task of it; bottom: the
        # last one's, behind every task of it.
        edge = others[0] if to == "top" else others[-1]
        same = [t.rank for t in others if t.priority == edge.priority]
        rank = min(same) - 1 if to == "top" else max(same) + 1
        self._run(self.queue.move(self.queue.state.tasks[task_id], to=to))
        self.model[task_id].priority = edge.priority
        self.model[task_id].rank = rank

    @rule(paused=st.booleans())
    def pause(self, paused: bool) -> None:
        self._run(self.queue.set_paused(paused))
        self.paused = paused

    @rule(data=st.data(), bookmarked=st.booleans())
    def bookmark(self, data: st.DataObject, bookmarked: bool) -> None:
        if not self.model:
            return
        task_id = data.draw(st.sampled_from(sorted(self.model)))
        task = self.queue.state.tasks[task_id]
        self._run(self.queue.update(task, {"bookmarked": bookmarked}))
        self.model[task_id].bookmarked = bookmarked

    def _owed(self) -> list[str]:
        return sorted(i for i, t in self.model.items() if t.delivery == "pending")

    @precondition(lambda self: bool(self._owed()))
    @rule(
        data=st.data(),
        outcome=st.sampled_from([None, "delivered", "rejected", "gave_up"]),
    )
    def deliver(self, data: st.DataObject, outcome: str | None) -> None:
        task_id = data.draw(st.sampled_from(self._owed()))
        attempt = {"at": "2026-12-04T12:00:00.000Z", "status_code": 503}
        task = self.queue.state.tasks[task_id]
        self._run(self.queue.record_delivery(task, attempt, outcome))
        model = self.model[task_id]
        model.tries += 1
        model.delivery = outcome or "pending"

    @precondition(lambda self: bool(self._owed()))
    @rule(data=st.data())
    def call_off_delivery(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self._owed()))
        self._run(self.queue.cancel_delivery(self.queue.state.tasks[task_id]))
        self.model[task_id].delivery = "cancelled"

    @rule()
    def clear(self) -> None:
        self._run(self.queue.clear())
        for task in self.model.values():
            if task.status == "pending" and not task.bookmarked:
                task.becomes("cancelled")

    @rule()
    def forget(self) -> None:
        self._run(self.queue.forget(FINAL_STATUSES))
        self.model = {
            i: t
            for i, t in self.model.items()
            if t.status not in FINAL_STATUSES or t.bookmarked or t.delivery == "pending"
        }

    @rule()
    def compact(self) -> None:
        self._run(self.queue.compact())

    @rule()
    def restart(self) -> None:
        self._run(self.queue.close())
        self.queue = self._open()
        self._settle_running()

    @rule(torn=st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b))
    def kill_and_tear_the_tail(self, torn: bytes) -> None:
        """Die without closing, in the middle of writing one more record."""
        self.queue.journal._writer.cancel()  # type: ignore[union-attr]
        with (self.dir / JOURNAL_NAME).open("ab") as f:
            f.write(b'{"seq":' + torn)
        self.queue = self._open()
        self._settle_running()

    @invariant()
    def matches_the_model(self) -> None:
        state = self.queue.state
        assert {i: t.status for i, t in state.tasks.items()} == {
            i: t.status for i, t in self.model.items()
        }
        assert [key[2] for key in state.pending] == self._pending_order()
        assert state.paused == self.paused
        assert {i: t.attempts for i, t in state.tasks.items()} == {
            i: t.attempts for i, t in self.model.items()
        }
        assert {
            i: (t.bookmarked, t.delivery, t.delivery_tries)
            for i, t in state.tasks.items()
        } == {i: (t.bookmarked, t.delivery, t.tries) for i, t in self.model.items()}
        assert sorted(state.deliveries) == self._owed()


QueueMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_queue_always_equals_its_model = QueueMachine.TestCase
