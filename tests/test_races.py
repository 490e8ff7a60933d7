"""Requests that act on a task another request changes meanwhile.

A handler picks its task, awaits (an fsync, a body, the webui), then changes it;
another request may have changed or forgotten that task in between. Such a change
must be refused (409, or the extension's success false), never journaled: a record
the state refuses would stop the next start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from inuqueue.queue import TaskQueue
from inuqueue.state import StateError
from tests.conftest import API, Daemon, StandinHandle

AS = "/agent-scheduler/v1"


@contextlib.asynccontextmanager
async def fsyncs_held(queue: TaskQueue) -> AsyncIterator[None]:
    """Hold the journal writer, so that every change waits for its fsync."""
    async with queue.journal._write_lock:
        yield


async def _wait_appended(queue: TaskQueue, seq: int) -> None:
    await queue.wait_until(lambda: queue.journal.last_seq >= seq)


async def test_a_delete_and_a_history_clear_at_once_leave_a_journal_that_replays(
    daemon: Daemon,
) -> None:
    queue = daemon.runtime.queue
    await queue.set_paused(True)
    task_id = (
        await (
            await daemon.client.post(f"{AS}/queue/txt2img", json={"prompt": "raced"})
        ).json()
    )["task_id"]

    async with fsyncs_held(queue):
        seq = queue.journal.last_seq
        deleting = asyncio.create_task(daemon.client.delete(f"{AS}/task/{task_id}"))
        await _wait_appended(queue, seq + 1)  # the cancel, waiting for its fsync
        clearing = asyncio.create_task(daemon.client.post(f"{AS}/history/clear"))
        await _wait_appended(queue, seq + 2)  # the clear forgot the cancelled task
    deleted, cleared = await deleting, await clearing

    assert (deleted.status, await deleted.json()) == (
        200,
        {"success": True, "message": "Task deleted"},
    )
    assert cleared.status == 200
    await daemon.restart()
    assert task_id not in daemon.runtime.queue.state.tasks


async def test_a_queue_clear_and_a_history_clear_at_once_answer_200(
    daemon: Daemon,
) -> None:
    queue = daemon.runtime.queue
    await queue.set_paused(True)
    for prompt in ("a", "b"):
        await daemon.client.post(f"{AS}/queue/txt2img", json={"prompt": prompt})

    async with fsyncs_held(queue):
        seq = queue.journal.last_seq
        clearing = asyncio.create_task(daemon.client.post(f"{AS}/queue/clear"))
        await _wait_appended(queue, seq + 2)  # both cancels
        forgetting = asyncio.create_task(daemon.client.delete(f"{API}/history"))
        await _wait_appended(queue, seq + 4)  # both forgotten by the other request
    cleared, forgot = await clearing, await forgetting

    assert cleared.status == 200
    assert await cleared.json() == {"success": True, "message": "Queue cleared."}
    assert forgot.status == 200
    await daemon.restart()
    assert not daemon.runtime.queue.state.tasks


async def test_a_change_to_a_task_gone_meanwhile_is_refused_and_not_journaled(
    daemon: Daemon,
) -> None:
    queue = daemon.runtime.queue
    task_id = await daemon.enqueue()
    await daemon.wait_status(task_id, "done")
    stale = queue.state.tasks[task_id]
    await queue.forget(frozenset({"done"}))
    seq = queue.journal.last_seq

    with pytest.raises(StateError):
        await queue.update(stale, {"name": "too late"})

    assert queue.journal.last_seq == seq
    await daemon.restart()
    assert task_id not in daemon.runtime.queue.state.tasks


async def test_two_requeue_failed_at_once_copy_each_failed_task_once(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.fail_next(3)
    failed = [await daemon.enqueue({"prompt": f"f{n}"}) for n in range(3)]
    for task_id in failed:
        await daemon.wait_status(task_id, "failed")

    first, second = await asyncio.gather(
        daemon.client.post(f"{API}/queue/requeue-failed"),
        daemon.client.post(f"{AS}/task/requeue-failed"),
    )
    copies = (await first.json())["task_ids"] + (await second.json()).get(
        "task_ids", []
    )

    assert len(copies) == 3
    sources = {daemon.runtime.queue.state.tasks[c].requeued_from for c in copies}
    assert sources == set(failed)
