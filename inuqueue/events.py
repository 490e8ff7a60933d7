"""Task transitions as events: each journal record is one, its seq its id.

Subscribers hold no queue of their own. Each remembers the last id it sent and asks
for what came after; recent events come from a bounded ring in memory, older ones
from the journal file. A slow client only falls behind, it never holds the queue up
or makes memory grow. Progress events are not journaled: a subscriber gets the
latest progress of a running task when it is caught up, and none on a replay.
"""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path
from typing import Any

from inuqueue.journal import JournalReader, Record

# About an hour of a busy queue's transitions; older ones are read from the file.
RING_EVENTS = 10_000
# The most events read from the journal file for one lagging subscriber at a time.
REPLAY_BATCH_EVENTS = 1_000

Event = dict[str, Any]
SNAPSHOT_OPS = frozenset({"snapshot", "snapshot_task"})

_TYPES = {
    "enqueue": "enqueued",
    "start": "started",
    "release": "requeued",
    "retry": "requeued",
    "cancel": "cancelled",
    "interrupt": "interrupting",
    "pause": "paused",
    "resume": "resumed",
    "move": "moved",
    "update": "updated",
    "forget": "forgotten",
    "deliver": "callback",
}


def event_from_record(record: Record) -> Event:
    """The event a journal record stands for."""
    op = record["op"]
    event: Event = {"id": record["seq"], "ts": record["ts"]}
    if op == "enqueue":
        spec = record["task"]
        event.update(
            type="enqueued",
            task_id=spec["task_id"],
            task_type=spec["type"],
            name=spec.get("name"),
            priority=spec.get("priority", 0),
            requeued_from=spec.get("requeued_from"),
        )
        return event
    if op == "finish":
        event.update(
            type=record["status"],
            task_id=record["task_id"],
            images=[image["digest"] for image in record.get("images") or []],
            error=(record.get("error") or {}).get("reason"),
        )
        return event

    event["type"] = _TYPES.get(op, op)
    for key in ("task_id", "reason", "priority", "rank", "name", "bookmarked"):
        if key in record:
            event[key] = record[key]
    if op == "deliver":
        event["outcome"] = record.get("outcome") or "retrying"
        event["status_code"] = (record.get("attempt") or {}).get("status_code")
    return event


class EventHub:
    """The recent transitions, and a way to wait for the next one."""

    def __init__(self, journal_path: Path, ring_events: int = RING_EVENTS) -> None:
        self.journal_path = journal_path
        self.ring_size = ring_events
        self._ring: deque[Event] = deque(maxlen=ring_events)
        self.durable_seq = 0
        # Events up to this seq were compacted away (0: the journal has them all).
        self.floor_seq = 0
        self.progress: dict[str, Event] = {}
        self._wake = asyncio.Event()
        self.closed = False

    def add(self, record: Record) -> None:
        """Keep the event of a record just appended (not yet durable)."""
        if record["op"] in SNAPSHOT_OPS:
            # What came before a snapshot is gone from the journal file.
            self.floor_seq = record["seq"]
            return
        self._ring.append(event_from_record(record))

    def drop_after(self, seq: int) -> None:
        """Forget the events of records that were never made durable."""
        while self._ring and self._ring[-1]["id"] > seq:
            self._ring.pop()

    def durable(self, seq: int) -> None:
        """Records up to `seq` are durable: their events may go out."""
        self.durable_seq = seq
        self._notify()

    def set_progress(self, task_id: str, progress: dict[str, Any] | None) -> None:
        """The latest progress of a running task, or None once it stopped."""
        if progress is None:
            self.progress.pop(task_id, None)
        else:
            self.progress[task_id] = {
                "type": "progress",
                "task_id": task_id,
                **progress,
            }
        self._notify()

    def close(self) -> None:
        """Let every subscriber end (the daemon stops)."""
        self.closed = True
        self._notify()

    def _notify(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def changed(self) -> asyncio.Event:
        """An event set at the next change; take it before looking at the state."""
        return self._wake

    async def after(self, last_id: int) -> list[Event]:
        """Durable events with an id above `last_id`, oldest first."""
        if last_id > self.durable_seq:
            # An id this journal never gave (its data directory was replaced):
            # start the client over from here.
            return [self._reset_event(self.durable_seq)]
        if last_id == self.durable_seq:
            return []
        if last_id < self.floor_seq and not (
            self._ring and self._ring[0]["id"] <= last_id + 1
        ):
            return [self._reset_event(self.floor_seq)]
        if self._ring and self._ring[0]["id"] <= last_id + 1:
            start = last_id + 1 - self._ring[0]["id"]
            end = self.durable_seq - self._ring[0]["id"] + 1
            return [self._ring[i] for i in range(start, min(end, len(self._ring)))]
        return await asyncio.to_thread(self._from_journal, last_id)

    def _reset_event(self, seq: int) -> Event:
        return {
            "id": seq,
            "type": "reset",
            "message": (
                f"The events after the id you gave are not in this journal (from "
                f"{seq} on they are); read the queue and the history again, then "
                "follow from here."
            ),
        }

    def _from_journal(self, last_id: int) -> list[Event]:
        events = []
        reader = JournalReader(self.journal_path)
        for record in reader.records(cut_torn_tail=False):
            if record["seq"] > self.durable_seq:
                break
            if record["op"] not in SNAPSHOT_OPS and record["seq"] > last_id:
                events.append(event_from_record(record))
                if len(events) >= REPLAY_BATCH_EVENTS:
                    break
        return events
