"""The event stream: every transition once, resumable with Last-Event-ID."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson

from inuqueue.events import EventHub
from inuqueue.journal import JournalReader, encode_record
from tests.conftest import API, Daemon, StandinHandle, hold_a_running_task


class EventStream:
    """A minimal Server-Sent Events client over an open response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> dict[str, Any]:
        """The next event, as its fields plus the parsed data."""
        fields: dict[str, str] = {}
        while True:
            line = (await self.response.content.readline()).decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if not line:
                if "data" in fields:
                    return {**fields, "payload": orjson.loads(fields["data"])}
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value

    async def transitions(self, count: int) -> list[dict[str, Any]]:
        """The next `count` journaled events (progress skipped)."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            event = await self.next()
            if "id" in event:
                found.append(event)
        return found


async def _open(daemon: Daemon, query: str = "", last_id: int | None = None) -> Any:
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    response = await daemon.client.get(f"{API}/events{query}", headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    return response


def _journal_ids_after(daemon: Daemon, last_id: int) -> list[int]:
    reader = JournalReader(daemon.config.data_dir / "journal.jsonl")
    return [r["seq"] for r in reader.records(cut_torn_tail=False) if r["seq"] > last_id]


async def test_a_task_s_transitions_arrive_in_order(daemon: Daemon) -> None:
    response = await _open(daemon)
    stream = EventStream(response)

    task_id = await daemon.enqueue()
    events = await stream.transitions(3)
    response.close()

    assert [e["event"] for e in events] == ["enqueued", "started", "done"]
    assert {e["payload"]["task_id"] for e in events} == {task_id}
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert events[2]["payload"]["images"]


async def test_a_reconnecting_client_gets_each_missed_transition_once(
    daemon: Daemon,
) -> None:
    response = await _open(daemon)
    await daemon.wait_status(await daemon.enqueue(), "done")
    seen = await EventStream(response).transitions(3)
    response.close()
    last_id = int(seen[-1]["id"])

    missed = [await daemon.enqueue() for _ in range(2)]
    for task_id in missed:
        await daemon.wait_status(task_id, "done")
    expected = _journal_ids_after(daemon, last_id)

    again = await _open(daemon, last_id=last_id)
    events = await EventStream(again).transitions(len(expected))
    again.close()

    assert [int(e["id"]) for e in events] == expected
    got = sorted((e["payload"]["task_id"], e["event"]) for e in events)
    assert got == sorted(
        (task_id, kind)
        for task_id in missed
        for kind in ("enqueued", "started", "done")
    )


async def test_missed_transitions_survive_a_daemon_restart(
    daemon: Daemon, standin: StandinHandle
) -> None:
    response = await _open(daemon)
    await daemon.wait_status(await daemon.enqueue(), "done")
    last_id = int((await EventStream(response).transitions(3))[-1]["id"])
    response.close()

    interrupted = await hold_a_running_task(
        daemon, standin, {"prompt": "running at the stop"}
    )
    await daemon.stop()
    standin.state.release()
    await daemon.start()
    await daemon.wait_status(interrupted, "done")
    expected = _journal_ids_after(daemon, last_id)

    again = await _open(daemon, last_id=last_id)
    events = await EventStream(again).transitions(len(expected))
    again.close()

    assert [int(e["id"]) for e in events] == expected
    kinds = [e["event"] for e in events]
    assert kinds == ["enqueued", "started", "requeued", "started", "done"]


async def test_a_task_filter_shows_one_task_only(
    daemon: Daemon, standin: StandinHandle
) -> None:
    other = await hold_a_running_task(daemon, standin)
    mine = await daemon.enqueue()
    response = await _open(daemon, f"?task_id={mine}", last_id=0)

    standin.state.release()
    events = await EventStream(response).transitions(3)
    response.close()

    assert {e["payload"]["task_id"] for e in events} == {mine}
    assert other != mine


async def test_a_client_that_never_reads_does_not_hold_the_queue_up(
    daemon: Daemon,
) -> None:
    idle = [await _open(daemon, last_id=0) for _ in range(3)]

    tasks = [await daemon.enqueue({"prompt": "x" * 4000}) for _ in range(40)]
    for task_id in tasks:
        await daemon.wait_status(task_id, "done")

    for response in idle:
        response.close()


async def test_a_bad_last_event_id_is_refused(daemon: Daemon) -> None:
    response = await daemon.client.get(f"{API}/events", headers={"Last-Event-ID": "x"})

    assert response.status == 400
    assert (await response.json())["error"] == "invalid_last_event_id"


async def test_events_older_than_the_ring_come_from_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    records = [
        {"seq": n, "ts": "t", "op": "start", "task_id": f"t{n}"} for n in range(1, 21)
    ]
    path.write_bytes(b"".join(encode_record(r) for r in records))
    hub = EventHub(path, ring_events=5)
    for record in records:
        hub.add(record)
    hub.durable(20)

    old = await hub.after(3)
    recent = await hub.after(17)

    assert [e["id"] for e in old] == list(range(4, 21))
    assert [e["task_id"] for e in recent] == ["t18", "t19", "t20"]
    assert await hub.after(20) == []
