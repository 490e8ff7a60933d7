"""Bookmarks, and tasks the clears and the retention leave alone (native API)."""

from __future__ import annotations

from typing import Any

from tests.conftest import API, Daemon, StandinHandle, free_port, hold_a_running_task


async def _patch(daemon: Daemon, task_id: str, body: dict[str, Any]) -> Any:
    response = await daemon.client.patch(f"{API}/task/{task_id}", json=body)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_a_bookmarked_pending_task_survives_a_queue_clear(
    daemon: Daemon, standin: StandinHandle
) -> None:
    running = await hold_a_running_task(daemon, standin)
    kept = await daemon.enqueue({"prompt": "kept"})
    dropped = await daemon.enqueue({"prompt": "dropped"})
    assert (await _patch(daemon, kept, {"bookmarked": True}))["bookmarked"] is True

    cleared = await (await daemon.client.post(f"{API}/queue/clear")).json()

    assert cleared["cancelled"] == [dropped]
    standin.state.release()
    await daemon.wait_status(running, "done")
    assert (await daemon.wait_status(kept, "done"))["bookmarked"] is True


async def test_forgetting_history_leaves_bookmarked_tasks(daemon: Daemon) -> None:
    kept = await daemon.enqueue({"prompt": "kept"})
    dropped = await daemon.enqueue({"prompt": "dropped"})
    await daemon.wait_status(dropped, "done")
    await daemon.wait_status(kept, "done")
    await _patch(daemon, kept, {"bookmarked": True})

    forgotten = await (await daemon.client.delete(f"{API}/history")).json()
    await daemon.restart()

    assert forgotten["task_ids"] == [dropped]
    history = await (await daemon.client.get(f"{API}/history")).json()
    assert [t["task_id"] for t in history["tasks"]] == [kept]
    assert history["tasks"][0]["bookmarked"] is True


async def test_unbookmarking_lets_the_next_clear_take_it(daemon: Daemon) -> None:
    task_id = await daemon.enqueue()
    await daemon.wait_status(task_id, "done")
    await _patch(daemon, task_id, {"bookmarked": True})
    await _patch(daemon, task_id, {"bookmarked": False})

    forgotten = await (await daemon.client.delete(f"{API}/history")).json()

    assert forgotten["task_ids"] == [task_id]


async def test_retention_keeps_bookmarked_tasks_and_owed_callbacks(
    daemon: Daemon,
) -> None:
    await daemon.restart(history_keep=0)
    bookmarked = await daemon.enqueue({"seed": 1})
    # A free port nothing listens on: the delivery stays owed.
    hook = f"http://127.0.0.1:{free_port()}/hook"
    owed = await daemon.enqueue({"seed": 2, "callback_url": hook})
    plain = await daemon.enqueue({"seed": 3})
    for task_id in (bookmarked, owed, plain):
        await daemon.wait_status(task_id, "done")
    await _patch(daemon, bookmarked, {"bookmarked": True})

    await daemon.runtime.queue.compact()

    tasks = daemon.runtime.queue.state.tasks
    assert set(tasks) == {bookmarked, owed}
    assert tasks[owed].delivery == "pending"


async def test_a_bookmark_must_be_true_or_false(daemon: Daemon) -> None:
    task_id = await daemon.enqueue()
    response = await daemon.client.patch(
        f"{API}/task/{task_id}", json={"bookmarked": "yes"}
    )

    assert response.status == 422
    assert (await response.json())["field"] == "bookmarked"
