"""Callbacks under faults: crashes, compaction and a failing journal lose none.

Every task that was acknowledged ends final and its receiver hears that outcome at
least once; a duplicate carries the same body (only `X-Inuqueue-Attempt` may
differ), and a receiver is never told an outcome the journal does not hold.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient

from inuqueue import journal as journal_module
from inuqueue.config import Config
from inuqueue.maintenance import scan_journal
from inuqueue.queue import TaskQueue
from tests.conftest import (
    API,
    Daemon,
    DaemonProcess,
    StandinHandle,
    free_port,
    hold_a_running_task,
    poll_until,
    quick_config,
)
from tests.test_webhooks import FAST_RETRIES, WAIT_S, Receiver, Reply, enqueue_at

AS_API = "/agent-scheduler/v1"
FINAL_DELIVERIES = ("delivered", "rejected", "gave_up", "cancelled")
# The healer tries this often while the journal refuses writes.
STORAGE_RETRY_S = 0.05
# Failed heals watched before deciding the deliverer sat still meanwhile: at the
# quick back-off a spinning deliverer would have tried many times by then.
HEALS_WATCHED = 8
# How long a callback that must not come is given to arrive: a deliverer that
# sends one does so within milliseconds.
NO_CALLBACK_WINDOW_S = 1.0
# Small enough that a few dozen tasks and their tries compact several times.
COMPACT_UNDER_LOAD_BYTES = 4_096
COMPACTED_TASKS = 30
# The SIGKILL soak: seeds, kills per seed, fresh enqueues per round, when a round
# is killed, how often a cancel comes between enqueues, and a bound to settle.
SOAK_SEEDS = range(3)
SOAK_KILLS = 3
SOAK_TASKS_PER_ROUND = 10
SOAK_KILL_AFTER_S = (0.05, 0.5)
SOAK_CANCEL_P = 0.15
SOAK_SETTLE_S = 30.0


# Receivers


@dataclass
class Answered:
    """One request a receiver got, and the status it answered."""

    headers: CIMultiDict[str]
    body: bytes
    status: int

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)

    @property
    def task_id(self) -> str:
        """The task the request reports on."""
        return self.headers["X-Inuqueue-Task-Id"]


@dataclass
class SeededReceiver:
    """A receiver on 127.0.0.1 that refuses the n-th report of a task (503) when a
    seeded draw for (task name, n) says so, at most `max_refusals` times per task,
    and takes (200) everything else; reproducible whatever order reports come in."""

    seed: int
    refuse_p: float = 0.3
    max_refusals: int = 1
    port: int = field(default_factory=free_port)
    answered: list[Answered] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The callback URL to give at enqueue."""
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> SeededReceiver:
        """Listen from now on."""
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def of(self, task_id: str) -> list[Answered]:
        """The requests that reported on this task, in order."""
        return [a for a in self.answered if a.task_id == task_id]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        task_id = request.headers.get("X-Inuqueue-Task-Id", "")
        name = orjson.loads(body).get("name")
        n = len(self.of(task_id)) + 1
        draw = random.Random(f"{self.seed}/{name}/{n}").random()
        status = 503 if n <= self.max_refusals and draw < self.refuse_p else 200
        self.answered.append(Answered(request.headers.copy(), body, status))
        return web.Response(status=status, text="noted")


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Receiver]]:
    """Make scripted receivers (not started); all stopped when the test ends."""
    made: list[Receiver] = []

    def make(*script: Reply) -> Receiver:
        receiver = Receiver(free_port(), list(script) or [Reply()])
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        await receiver.stop()


# The journal's fsync, held or failed on demand


class SyncGate:
    """Stands in for the journal's `_datasync`: `hold_next()` makes the next sync
    wait in its thread until `open()`; `broken` fails every sync with EIO."""

    def __init__(self, real: Callable[[int], None]) -> None:
        self.real = real
        self.broken = False
        self.failed_syncs = 0
        self._armed = False
        self._fail_held = False
        self.entered = threading.Event()
        self._opened = threading.Event()

    def hold_next(self) -> None:
        """Hold the next sync until `open()`."""
        self.entered.clear()
        self._opened.clear()
        self._armed = True

    def open(self, *, fail: bool) -> None:
        """Let the held sync go on: through to the disk, or failing with EIO."""
        self._fail_held = fail
        self._opened.set()

    async def wait_held(self) -> None:
        """Wait until a sync is held here."""
        assert await asyncio.to_thread(self.entered.wait, WAIT_S), "no sync came"

    def __call__(self, fd: int) -> None:
        if self._armed:
            self._armed = False
            self.entered.set()
            self._opened.wait(WAIT_S)
            if self._fail_held:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        if self.broken:
            self.failed_syncs += 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self.real(fd)


@pytest.fixture
def sync_gate(monkeypatch: pytest.MonkeyPatch) -> SyncGate:
    """The journal's fsync, under the test's control."""
    gate = SyncGate(journal_module._datasync)
    monkeypatch.setattr(journal_module, "_datasync", gate)
    return gate


# An in-process daemon and what it shows


def _config(standin: StandinHandle, data_dir: Path, **overrides: Any) -> Config:
    return quick_config(
        standin.url,
        data_dir,
        port=free_port(),
        storage_retry_s=STORAGE_RETRY_S,
        **{**FAST_RETRIES, **overrides},
    )


@pytest.fixture
async def daemon(
    aiohttp_client: AiohttpClient, standin: StandinHandle, tmp_path: Path
) -> AsyncIterator[Daemon]:
    """A daemon with quick callback retries and a quick healer."""
    handle = Daemon(aiohttp_client, _config(standin, tmp_path / "data"))
    await handle.start()
    yield handle
    await handle.stop()


async def _task(daemon: Daemon, task_id: str) -> dict[str, Any]:
    response = await daemon.client.get(f"{API}/task/{task_id}")
    assert response.status == 200, await response.text()
    task: dict[str, Any] = await response.json()
    return task


async def _wait_task(
    daemon: Daemon, task_id: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll the task's view until it passes `check`; return it."""

    async def ask() -> dict[str, Any] | None:
        task = await _task(daemon, task_id)
        return task if check(task) else None

    found: dict[str, Any] = await poll_until(ask, timeout_s=WAIT_S)
    return found


def _delivery(task: dict[str, Any]) -> str | None:
    callback = task["callback"]
    return None if callback is None else callback["delivery"]


async def _settled(daemon: Daemon, task_id: str) -> dict[str, Any]:
    """The task's view once its delivery is final."""
    return await _wait_task(daemon, task_id, lambda t: _delivery(t) in FINAL_DELIVERIES)


async def _arrives_within(receiver: Receiver, count: int, timeout_s: float) -> bool:
    """Whether the receiver has `count` requests within `timeout_s`."""

    async def enough() -> bool:
        return len(receiver.hits) >= count

    try:
        await poll_until(enough, timeout_s=timeout_s)
    except AssertionError:
        return False
    return True


def _native_payload(task: dict[str, Any], public_url: str) -> dict[str, Any]:
    """The native body the README promises for this task view."""
    return {
        "task_id": task["task_id"],
        "status": task["status"],
        "type": task["type"],
        "name": task["name"],
        "images": [
            {"digest": i["digest"], "url": f"{public_url}{API}/images/{i['digest']}"}
            for i in task["images"]
        ],
        "info": task["info"],
        "error": task["error"],
    }


async def _healed(daemon: Daemon) -> None:
    """Wait until the journal failed, then until the healer made it writable."""
    journal = daemon.runtime.queue.journal
    await asyncio.wait_for(journal.failed.wait(), WAIT_S)
    await asyncio.wait_for(journal.healthy.wait(), WAIT_S)


def _replays_cleanly(data_dir: Path) -> None:
    scan = scan_journal(data_dir)
    assert scan.healthy, (scan.bad_lineno, scan.bad_reason)


# A failing journal


@pytest.mark.parametrize("final_by", ["cancel", "finish"])
async def test_no_callback_reports_a_final_record_that_is_not_durable_yet(
    daemon: Daemon,
    standin: StandinHandle,
    receivers: Callable[..., Receiver],
    sync_gate: SyncGate,
    final_by: str,
) -> None:
    """The record that makes a task final is held in its fsync, then fails: no
    receiver may hear of that outcome, which the journal never held (D1, D8)."""
    receiver = await receivers().start()
    body = {"callback_url": receiver.url, "seed": 7}
    if final_by == "cancel":
        await hold_a_running_task(daemon, standin)
        task_id = await daemon.enqueue(body)
        sync_gate.hold_next()
        answer = asyncio.create_task(daemon.client.delete(f"{API}/task/{task_id}"))
    else:
        task_id = await hold_a_running_task(daemon, standin, body)
        sync_gate.hold_next()
        standin.state.release()
    await sync_gate.wait_held()

    # Not durable: a crash now would take it back, so nobody may be told yet.
    told_early = await _arrives_within(receiver, 1, NO_CALLBACK_WINDOW_S)
    sync_gate.open(fail=True)
    if final_by == "cancel":
        refused = await answer
        assert refused.status == 503, await refused.text()
    standin.state.release()
    await _healed(daemon)
    task = await _settled(daemon, task_id)

    told = [hit.json()["status"] for hit in receiver.hits]
    assert not told_early, (
        f"told {told[0]!r} while the record was not durable; the journal then "
        f"refused it, the task ended {task['status']}, and the receiver heard {told}"
    )
    # After the heal the task ran again (the failed record is gone): done.
    assert (task["status"], _delivery(task)) == ("done", "delivered")
    assert told and set(told) == {"done"}, f"the receiver was told {told}"
    await daemon.restart()
    assert (await _task(daemon, task_id))["status"] == "done"
    await daemon.stop()
    _replays_cleanly(daemon.config.data_dir)


async def test_a_try_whose_record_fails_is_recorded_after_the_heal_not_made_again(
    daemon: Daemon, receivers: Callable[..., Receiver], sync_gate: SyncGate
) -> None:
    """A `deliver` record that cannot be written loses no delivery: the try is
    recorded once the journal heals, not made again; while the journal is failed
    the deliverer waits instead of trying again and again."""
    journal = daemon.runtime.queue.journal
    taker = await receivers(Reply(hang=True), Reply(200)).start()
    refuser = await receivers(Reply(503)).start()
    retrying = await daemon.enqueue({"callback_url": refuser.url})
    task_id = await daemon.enqueue({"callback_url": taker.url})
    await taker.wait_in_flight(1)
    await refuser.wait_hits(2)

    sync_gate.broken = True
    taker.release()
    await asyncio.wait_for(journal.failed.wait(), WAIT_S)
    refused_before = len(refuser.hits)

    async def healer_failed_often() -> bool:
        return sync_gate.failed_syncs >= HEALS_WATCHED

    # Every heal fails; meanwhile an idle deliverer sends nothing new.
    await poll_until(healer_failed_often, timeout_s=WAIT_S)
    health = await (await daemon.client.get(f"{API}/health")).json()
    hits_while_failed = (len(taker.hits), len(refuser.hits) - refused_before)
    sync_gate.broken = False
    await asyncio.wait_for(journal.healthy.wait(), WAIT_S)
    task = await _settled(daemon, task_id)

    assert health["status"] == "degraded"
    # At most one try of the refused delivery was on its way when writes failed.
    assert hits_while_failed[0] == 1 and hits_while_failed[1] <= 1, hits_while_failed
    # The 200 whose record failed is recorded after the heal, not made again.
    callback = task["callback"]
    assert (callback["delivery"], callback["tries"]) == ("delivered", 1)
    assert [a["status_code"] for a in callback["attempts"]] == [200]
    assert len(taker.hits) == 1
    await daemon.restart()
    assert set(daemon.runtime.queue.state.deliveries) == {retrying}
    assert _delivery(await _task(daemon, task_id)) == "delivered"
    await daemon.stop()
    _replays_cleanly(daemon.config.data_dir)


async def test_a_heal_while_a_try_is_on_its_way_records_that_try_once(
    daemon: Daemon, receivers: Callable[..., Receiver], sync_gate: SyncGate
) -> None:
    """The heal rebuilds the state under a try in flight: its answer is recorded
    on the new state, and the rebuilt state does not start a second try."""
    receiver = await receivers(Reply(hang=True), Reply(200)).start()
    task_id = await daemon.enqueue({"callback_url": receiver.url})
    await receiver.wait_in_flight(1)

    sync_gate.broken = True
    refused = await daemon.client.post(f"{API}/queue/txt2img", json={"prompt": "no"})
    sync_gate.broken = False
    await _healed(daemon)
    receiver.release()
    task = await _settled(daemon, task_id)

    assert refused.status == 503, await refused.text()
    callback = task["callback"]
    assert (callback["delivery"], callback["tries"]) == ("delivered", 1)
    assert len(receiver.hits) == 1 and receiver.max_in_flight == 1
    await daemon.restart()
    state = daemon.runtime.queue.state
    assert [t.request.get("prompt") for t in state.tasks.values()] == ["a cat"]
    assert _delivery(await _task(daemon, task_id)) == "delivered"
    await daemon.stop()
    _replays_cleanly(daemon.config.data_dir)


@pytest.mark.parametrize("how", ["forgotten", "called-off"])
async def test_a_delivery_ended_while_its_try_is_on_its_way_is_not_recorded_after(
    daemon: Daemon, receivers: Callable[..., Receiver], how: str
) -> None:
    """The try's answer comes back to a task that owes nothing any more: it leaves
    no record that the journal could not replay, and nothing is tried again."""
    receiver = await receivers(Reply(hang=True), Reply(200)).start()
    task_id = await daemon.enqueue({"callback_url": receiver.url})
    await receiver.wait_in_flight(1)

    if how == "forgotten":
        ended = await daemon.client.delete(f"{AS_API}/task/{task_id}")
    else:
        ended = await daemon.client.delete(f"{API}/task/{task_id}/callback")
    assert ended.status == 200, await ended.text()
    receiver.release()

    async def answered() -> bool:
        return receiver.in_flight == 0

    await poll_until(answered, timeout_s=WAIT_S)
    await daemon.runtime.queue.settled()
    await daemon.restart()

    state = daemon.runtime.queue.state
    assert not state.deliveries
    if how == "forgotten":
        assert task_id not in state.tasks
    else:
        callback = (await _task(daemon, task_id))["callback"]
        assert (callback["delivery"], callback["tries"]) == ("cancelled", 0)
    assert len(receiver.hits) == 1
    await daemon.stop()
    _replays_cleanly(daemon.config.data_dir)


# Compaction


def _journal_ops(data_dir: Path) -> list[str]:
    lines = (data_dir / "journal.jsonl").read_bytes().splitlines()
    return [orjson.loads(line)["op"] for line in lines]


async def test_owed_deliveries_survive_a_compaction_and_a_restart(
    daemon: Daemon, receivers: Callable[..., Receiver]
) -> None:
    """With the receiver down, the snapshot keeps what is owed, every try so far
    and the ended deliveries; once it is up the owed ones arrive, the rest never."""
    down = receivers()
    taker = await receivers().start()
    owed = [await daemon.enqueue({"callback_url": down.url}) for _ in range(3)]
    delivered = await daemon.enqueue({"callback_url": taker.url})
    called_off = await daemon.enqueue({"callback_url": down.url})
    await _settled(daemon, delivered)
    await _wait_task(daemon, called_off, lambda t: t["callback"]["tries"] >= 1)
    off = await daemon.client.delete(f"{API}/task/{called_off}/callback")
    assert off.status == 200, await off.text()
    for task_id in owed:
        await _wait_task(daemon, task_id, lambda t: t["callback"]["tries"] >= 2)
    every = [*owed, delivered, called_off]
    before = {task_id: (await _task(daemon, task_id))["callback"] for task_id in every}

    await daemon.runtime.queue.compact()
    ops = _journal_ops(daemon.config.data_dir)
    await daemon.restart()
    after = {task_id: (await _task(daemon, task_id))["callback"] for task_id in every}
    await down.start()
    settled = {task_id: await _settled(daemon, task_id) for task_id in owed}

    assert ops[0] == "snapshot"
    for task_id in owed:
        kept, was = after[task_id], before[task_id]
        assert kept["delivery"] == "pending"
        # Tries go on until the receiver is up; those before the snapshot stay.
        assert kept["tries"] >= was["tries"]
        assert kept["attempts"][: was["tries"]] == was["attempts"]
    assert after[delivered] == before[delivered]
    assert (after[called_off]["delivery"], after[called_off]) == (
        "cancelled",
        before[called_off],
    )
    public_url = daemon.runtime.public_base_url()
    for task_id, task in settled.items():
        assert _delivery(task) == "delivered"
        [hit] = [h for h in down.hits if h.headers["X-Inuqueue-Task-Id"] == task_id]
        assert hit.json() == _native_payload(task, public_url)
        assert hit.headers["X-Inuqueue-Attempt"] == str(task["callback"]["tries"])
    assert {h.headers["X-Inuqueue-Task-Id"] for h in down.hits} == set(owed)
    assert len(taker.hits) == 1
    await daemon.stop()
    _replays_cleanly(daemon.config.data_dir)


async def test_compactions_under_load_keep_every_try_and_lose_no_delivery(
    aiohttp_client: AiohttpClient,
    standin: StandinHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small `compact_bytes` compacts again and again while callbacks are tried:
    each try that reached the receiver is journaled exactly once, none is lost."""
    compactions = 0
    original = TaskQueue.compact

    async def counted(self: TaskQueue) -> set[str]:
        nonlocal compactions
        compactions += 1
        return await original(self)

    monkeypatch.setattr(TaskQueue, "compact", counted)
    receiver = await SeededReceiver(seed=11, refuse_p=0.5, max_refusals=2).start()
    daemon = Daemon(
        aiohttp_client,
        _config(standin, tmp_path / "data", compact_bytes=COMPACT_UNDER_LOAD_BYTES),
    )
    await daemon.start()
    try:
        task_ids = await asyncio.gather(
            *(
                daemon.enqueue({"callback_url": receiver.url, "name": f"t{n}"})
                for n in range(COMPACTED_TASKS)
            )
        )
        tasks = {task_id: await _settled(daemon, task_id) for task_id in task_ids}
        public_url = daemon.runtime.public_base_url()
        await daemon.restart()
        after = {task_id: await _task(daemon, task_id) for task_id in task_ids}
        owed_after = set(daemon.runtime.queue.state.deliveries)
    finally:
        await daemon.stop()
        await receiver.stop()

    assert compactions >= 2, compactions
    assert {a.task_id for a in receiver.answered} == set(task_ids)
    for task_id, task in tasks.items():
        callback = task["callback"]
        answered = receiver.of(task_id)
        assert callback["delivery"] == "delivered"
        # No crash here: every answer the receiver gave is one journaled try.
        assert [a["status_code"] for a in callback["attempts"]] == [
            a.status for a in answered
        ]
        assert {a.body for a in answered} == {answered[0].body}
        assert answered[0].json() == _native_payload(task, public_url)
        assert after[task_id]["callback"] == callback
    assert not owed_after
    _replays_cleanly(daemon.config.data_dir)


# SIGKILL at random moments


class HookWorkload:
    """Enqueues with a callback (and now and then a cancel) until killed;
    remembers what the daemon acknowledged and what it left unanswered."""

    def __init__(self, url: str, callback_url: str, rng: random.Random) -> None:
        self.url = url
        self.callback_url = callback_url
        self.rng = rng
        self.enqueued: dict[str, str] = {}  # idempotency key -> task id
        self.unanswered: set[str] = set()

    async def run(self, http: aiohttp.ClientSession, keys: list[str]) -> None:
        for key in keys:
            if self.enqueued and self.rng.random() < SOAK_CANCEL_P:
                victim = self.rng.choice(sorted(self.enqueued.values()))
                async with http.delete(f"{self.url}{API}/task/{victim}") as response:
                    # 409 once it is final: then its own outcome is reported.
                    assert response.status in (200, 202, 409), await response.text()
            await self._enqueue(http, key)

    async def _enqueue(self, http: aiohttp.ClientSession, key: str) -> None:
        # The name is the key: the seeded receiver draws its answers from it.
        body = {
            "prompt": key,
            "name": key,
            "steps": self.rng.randint(1, 4),
            "callback_url": self.callback_url,
        }
        self.unanswered.add(key)
        async with http.post(
            f"{self.url}{API}/queue/txt2img",
            json=body,
            headers={"Idempotency-Key": key},
        ) as response:
            assert response.status in (200, 202), await response.text()
            self.enqueued[key] = (await response.json())["task_id"]
        self.unanswered.discard(key)


def _copies_differ(answered: list[Answered]) -> str:
    """Say how the reports of one task differ from its first one."""
    first = answered[0].json()
    lines = [f"task {answered[0].task_id} was reported {len(answered)} times:"]
    for copy in answered:
        body = copy.json()
        fields = sorted(key for key in first if body.get(key) != first[key])
        lines.append(
            f"attempt {copy.headers['X-Inuqueue-Attempt']} status {body['status']} "
            f"answered {copy.status}, differs in {fields}; images "
            f"{[image['digest'][:12] for image in body['images']]}"
        )
    return "\n".join(lines)


async def _drain(process: DaemonProcess) -> None:
    """Read the daemon's log to its end, so that a full pipe never blocks it."""
    assert process.proc is not None and process.proc.stderr is not None
    while await process.proc.stderr.read(65_536):
        pass


async def _listed(http: aiohttp.ClientSession, url: str) -> dict[str, dict[str, Any]]:
    """Every task by id; the history is read last, so it has the last word on a
    task that finished between the two reads."""
    async with http.get(f"{url}{API}/queue?limit=500") as response:
        queue = await response.json()
    async with http.get(f"{url}{API}/history?limit=500") as response:
        history = await response.json()
    listed = [*queue["running"], *queue["pending"], *history["tasks"]]
    return {task["task_id"]: task for task in listed}


@pytest.mark.parametrize("seed", SOAK_SEEDS)
async def test_kills_at_random_moments_lose_no_callback(
    seed: int,
    standin: StandinHandle,
    tmp_path: Path,
    daemon_processes: Callable[[list[str]], DaemonProcess],
) -> None:
    """Enqueues with callbacks to a receiver that refuses some reports, SIGKILL at
    random moments, restarts on the same data: every acknowledged task ends final
    and its receiver got that outcome at least once, each copy the same body."""
    rng = random.Random(seed)
    standin.state.delay_ms = 0
    receiver = await SeededReceiver(seed).start()
    data_dir = tmp_path / "data"
    # A fixed public URL keeps image URLs in bodies the same across restarts.
    public_url = f"http://127.0.0.1:{free_port()}"
    args = ["--upstream", standin.url, "--data", str(data_dir)]
    args += ["--public-url", public_url]
    enqueued: dict[str, str] = {}
    unanswered: set[str] = set()
    drains: list[asyncio.Task[None]] = []
    try:
        async with aiohttp.ClientSession() as http:
            for round_no in range(SOAK_KILLS):
                process = daemon_processes(args)
                url = await process.start()
                drains.append(asyncio.create_task(_drain(process)))
                workload = HookWorkload(url, receiver.url, rng)
                fresh = [f"{seed}-{round_no}-{n}" for n in range(SOAK_TASKS_PER_ROUND)]
                # What got no answer is sent again, with its key, first.
                running = asyncio.create_task(
                    workload.run(http, [*sorted(unanswered), *fresh])
                )
                done, _ = await asyncio.wait(
                    {running}, timeout=rng.uniform(*SOAK_KILL_AFTER_S)
                )
                await process.kill()
                if not done:
                    running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                if done:
                    running.result()
                enqueued.update(workload.enqueued)
                unanswered = (unanswered | workload.unanswered) - set(enqueued)

            process = daemon_processes(args)
            url = await process.start()
            drains.append(asyncio.create_task(_drain(process)))
            last = HookWorkload(url, receiver.url, rng)
            await last.run(http, sorted(unanswered))
            enqueued.update(last.enqueued)

            async def all_settled() -> dict[str, dict[str, Any]] | None:
                tasks = await _listed(http, url)
                wanted = [tasks.get(task_id) for task_id in enqueued.values()]
                if all(t is not None and _delivery(t) == "delivered" for t in wanted):
                    return tasks
                return None

            tasks = await poll_until(all_settled, timeout_s=SOAK_SETTLE_S)
            await process.kill()
    finally:
        await receiver.stop()
        for drain in drains:
            drain.cancel()
        await asyncio.gather(*drains, return_exceptions=True)

    # One task per key, whether its enqueue was answered the first time or not.
    assert sorted(t["name"] for t in tasks.values()) == sorted(enqueued)
    assert {a.task_id for a in receiver.answered} <= set(tasks)
    for task_id, task in tasks.items():
        answered = receiver.of(task_id)
        assert answered, f"{task['status']} task {task_id} was never reported"
        # At least once: duplicates carry the same body, only the attempt differs.
        assert {a.body for a in answered} == {answered[0].body}, _copies_differ(
            answered
        )
        assert answered[0].json() == _native_payload(task, public_url)
        assert all(int(a.headers["X-Inuqueue-Attempt"]) >= 1 for a in answered)
        assert 200 in [a.status for a in answered]
        # Replay invents no try: each journaled answer is one the receiver gave.
        recorded = Counter(a["status_code"] for a in task["callback"]["attempts"])
        assert not recorded - Counter(a.status for a in answered), task_id
    scan = scan_journal(data_dir)
    assert scan.healthy, (scan.bad_lineno, scan.bad_reason)
    assert not scan.state.deliveries


async def test_a_kill_during_a_hanging_try_makes_that_try_again_after_restart(
    standin: StandinHandle,
    tmp_path: Path,
    daemon_processes: Callable[[list[str]], DaemonProcess],
    receivers: Callable[..., Receiver],
) -> None:
    """SIGKILL, not a stop, while the receiver holds a try: the try was never
    journaled, so the restarted daemon makes it again, with the same body."""
    receiver = await receivers(Reply(hang=True), Reply(200)).start()
    public_url = f"http://127.0.0.1:{free_port()}"
    args = ["--upstream", standin.url, "--data", str(tmp_path / "data")]
    args += ["--public-url", public_url]
    first = daemon_processes(args)
    url = await first.start()
    task_id = await enqueue_at(url, receiver.url)
    await receiver.wait_in_flight(1)
    await first.kill()

    second = daemon_processes(args)
    url = await second.start()
    async with aiohttp.ClientSession() as http:

        async def delivered() -> dict[str, Any] | None:
            async with http.get(f"{url}{API}/task/{task_id}") as response:
                task: dict[str, Any] = await response.json()
            return task if _delivery(task) in FINAL_DELIVERIES else None

        task = await poll_until(delivered, timeout_s=WAIT_S)
    await second.kill()

    callback = task["callback"]
    assert (callback["delivery"], callback["tries"]) == ("delivered", 1)
    first_try, second_try = receiver.hits
    assert second_try.body == first_try.body
    assert second_try.json() == _native_payload(task, public_url)
    # The first try left no record, so the second counts as attempt 1 again.
    assert [h.headers["X-Inuqueue-Attempt"] for h in receiver.hits] == ["1", "1"]
    _replays_cleanly(tmp_path / "data")
