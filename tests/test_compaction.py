"""Compaction: the journal becomes a snapshot of the state, atomically (D7)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson
import pytest

from inuqueue import journal as journal_module
from inuqueue.journal import COMPACT_SUFFIX
from inuqueue.queue import TaskQueue
from tests.conftest import API, Daemon, StandinHandle, hold_a_running_task


async def _everything(daemon: Daemon) -> dict[str, Any]:
    """All a user can see of the queue, to compare before and after."""
    client = daemon.client
    queue = await (await client.get(f"{API}/queue?limit=500")).json()
    history = await (await client.get(f"{API}/history?limit=500")).json()
    tasks = {}
    for task in [*queue["running"], *queue["pending"], *history["tasks"]]:
        view = await (await client.get(f"{API}/task/{task['task_id']}")).json()
        view.pop("progress", None)
        tasks[task["task_id"]] = view
    state = daemon.runtime.queue.state
    return {
        "paused": queue["paused"],
        "pending": [t["task_id"] for t in queue["pending"]],
        "history": [t["task_id"] for t in history["tasks"]],
        "tasks": tasks,
        "idempotency": dict(state.idempotency),
        "image_refs": dict(state.image_refs),
    }


async def _varied_queue(daemon: Daemon, standin: StandinHandle) -> None:
    """Tasks in every status, a move, a rename, a requeue, a key and a pause."""
    standin.state.fail_next(1)
    failed = await daemon.enqueue({"prompt": "fails"})
    await daemon.wait_status(failed, "failed")
    done = await daemon.enqueue({"prompt": "done", "seed": 1})
    await daemon.wait_status(done, "done")
    await daemon.client.patch(f"{API}/task/{done}", json={"name": "renamed"})
    await daemon.client.post(f"{API}/task/{failed}/requeue")
    standin.state.hold()
    await standin.state.wait_generations(3)
    pending = [await daemon.enqueue({"prompt": p}) for p in "abc"]
    await daemon.client.post(
        f"{API}/queue/txt2img",
        json={"prompt": "keyed"},
        headers={"Idempotency-Key": "k1"},
    )
    await daemon.client.post(f"{API}/task/{pending[2]}/move", json={"to": "top"})
    await daemon.client.delete(f"{API}/task/{pending[1]}")
    await daemon.client.post(f"{API}/queue/pause")


async def test_a_compacted_journal_rebuilds_the_same_queue(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await _varied_queue(daemon, standin)
    before = await _everything(daemon)
    journal = daemon.config.data_dir / "journal.jsonl"
    lines_before = len(journal.read_bytes().splitlines())

    await daemon.runtime.queue.compact()

    lines = journal.read_bytes().splitlines()
    assert orjson.loads(lines[0])["op"] == "snapshot"
    assert len(lines) == 1 + len(daemon.runtime.queue.state.tasks) < lines_before
    assert await _everything(daemon) == before
    await daemon.stop()
    standin.state.release()
    await daemon.start()
    after = await _everything(daemon)

    # The task running at the stop is pending again, at the front (as after any
    # restart); everything else is as it was.
    running = [t for t, v in before["tasks"].items() if v["status"] == "running"]
    assert len(running) == 1
    assert after.pop("pending") == running + before.pop("pending")
    assert after["tasks"].pop(running[0])["status"] == "pending"
    del before["tasks"][running[0]]
    for view in [*before["tasks"].values(), *after["tasks"].values()]:
        view.pop("position")  # one more task waits in front of each of them now
    assert after == before


async def test_changes_during_a_compaction_land_after_the_snapshot(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await hold_a_running_task(daemon, standin)

    results = await asyncio.gather(
        daemon.runtime.queue.compact(),
        *(daemon.enqueue({"prompt": str(n)}) for n in range(20)),
    )
    ids = results[1:]
    await daemon.stop()
    standin.state.release()
    await daemon.start()

    assert set(ids) <= set(daemon.runtime.queue.state.tasks)
    last = daemon.runtime.queue.journal.last_seq
    later = await daemon.enqueue()
    assert daemon.runtime.queue.journal.last_seq > last
    await daemon.wait_status(later, "done")


async def test_a_compaction_that_crashed_before_its_rename_changes_nothing(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await _varied_queue(daemon, standin)
    before = await _everything(daemon)
    journal = daemon.config.data_dir / "journal.jsonl"
    original = journal.read_bytes()
    snapshot = daemon.runtime.queue.state.snapshot()
    await daemon.stop()
    standin.state.release()

    # What a crash mid-write leaves beside the journal: half a snapshot file.
    leftover = journal.with_name(journal.name + COMPACT_SUFFIX)
    leftover.write_bytes(orjson.dumps(snapshot)[: len(original) // 2])
    await daemon.start()

    assert not leftover.exists()
    assert journal.read_bytes().startswith(original)
    after = await _everything(daemon)
    running = [t for t, v in before["tasks"].items() if v["status"] == "running"]
    assert after["pending"] == running + before["pending"]
    assert set(after["tasks"]) == set(before["tasks"])
    assert after["history"] == before["history"]


async def test_retention_keeps_the_newest_history_and_collects_images(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await daemon.restart(history_keep=1, image_grace_s=0.0)
    old = await daemon.wait_status(await daemon.enqueue({"seed": 21}), "done")
    new = await daemon.wait_status(await daemon.enqueue({"seed": 22}), "done")

    orphans = await daemon.runtime.queue.compact()
    daemon.runtime.collector.collect_later(orphans)
    await daemon.runtime.collector.sweep()

    history = await (await daemon.client.get(f"{API}/history")).json()
    assert [t["task_id"] for t in history["tasks"]] == [new["task_id"]]
    assert not daemon.runtime.store.exists(old["images"][0]["digest"])
    assert daemon.runtime.store.exists(new["images"][0]["digest"])


async def test_a_journal_past_its_threshold_is_compacted_by_itself(
    daemon: Daemon,
) -> None:
    await daemon.restart(compact_bytes=8192)
    journal = daemon.runtime.queue.journal
    ids = []

    for _ in range(200):  # far more than 8 KiB of records
        ids.append(await daemon.enqueue({"prompt": "x" * 200}))
        if journal.snapshot_bytes:
            break
    await daemon.wait_status(ids[-1], "done")

    assert journal.snapshot_bytes > 0
    first = (daemon.config.data_dir / "journal.jsonl").read_bytes().split(b"\n")[0]
    assert orjson.loads(first)["op"] == "snapshot"
    await daemon.restart()
    assert set(daemon.runtime.queue.state.tasks) == set(ids)


async def _first_event(response: Any) -> dict[str, str]:
    """The fields of the first event on a stream, which is then closed."""
    fields: dict[str, str] = {}
    while "data" not in fields:
        line = (await response.content.readline()).decode().strip()
        if ": " in line:
            name, _, value = line.partition(": ")
            fields[name] = value
    response.close()
    return fields


async def test_a_client_older_than_the_snapshot_is_told_to_reread(
    daemon: Daemon,
) -> None:
    await daemon.wait_status(await daemon.enqueue(), "done")
    await daemon.runtime.queue.compact()
    await daemon.restart()

    response = await daemon.client.get(f"{API}/events", headers={"Last-Event-ID": "1"})
    fields = await _first_event(response)

    assert fields["event"] == "reset"
    assert "read the queue" in orjson.loads(fields["data"])["message"]


async def test_a_client_from_another_journal_is_told_to_reread(
    daemon: Daemon,
) -> None:
    await daemon.wait_status(await daemon.enqueue(), "done")
    response = await daemon.client.get(
        f"{API}/events", headers={"Last-Event-ID": "99999"}
    )
    fields = await _first_event(response)

    assert (fields["event"], fields["id"]) == ("reset", "3")


class Crash(BaseException):
    """The process dies here: nothing after this step happens."""


def _fingerprint(queue: Any) -> Any:
    state = queue.state
    return (
        state.paused,
        list(state.pending),
        list(state.history),
        sorted((t.task_id, t.status, t.name, t.priority) for t in state.tasks.values()),
    )


@pytest.mark.parametrize("step", ["fsync", "close", "replace", "fsync_dir", "open"])
async def test_a_crash_at_any_step_of_a_compaction_leaves_a_whole_journal(
    daemon: Daemon, standin: StandinHandle, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    await _varied_queue(daemon, standin)
    queue = daemon.runtime.queue
    before = _fingerprint(queue)
    names = ("fsync", "close", "replace", "open")
    real = {name: getattr(os, name) for name in names}

    def crash_at(name: str) -> Any:
        def call(*args: Any) -> Any:
            if name == step:
                raise Crash(name)
            return real[name](*args)

        return call

    for name in real:
        monkeypatch.setattr(os, name, crash_at(name))
    if step == "fsync_dir":
        monkeypatch.setattr(journal_module, "fsync_dir", crash_at("fsync_dir"))
    with pytest.raises(Crash):
        await queue.compact()
    monkeypatch.undo()

    # What the next start finds on disk, read as the daemon reads it.
    reopened = TaskQueue(daemon.config.data_dir, max_attempts=3, fsync=False)
    assert _fingerprint(reopened) == before
    assert not (daemon.config.data_dir / ("journal.jsonl" + COMPACT_SUFFIX)).exists()
    standin.state.release()


async def test_images_forgotten_just_before_a_stop_are_collected_after_it(
    daemon: Daemon,
) -> None:
    kept = await daemon.wait_status(await daemon.enqueue({"seed": 31}), "done")
    gone = await daemon.wait_status(await daemon.enqueue({"seed": 32}), "done")
    response = await daemon.client.patch(
        f"{API}/task/{kept['task_id']}", json={"bookmarked": True}
    )
    assert response.status == 200
    await daemon.client.delete(f"{API}/history")

    # Stopped before the grace period let the collector act on them.
    await daemon.restart(image_grace_s=0.0)
    await daemon.runtime.collector.sweep()

    store = daemon.runtime.store
    assert not store.exists(gone["images"][0]["digest"])
    assert store.exists(kept["images"][0]["digest"])
