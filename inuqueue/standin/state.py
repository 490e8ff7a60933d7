"""The live stand-in: its queue lock, webui state, and the knobs tests turn."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from aiohttp import web

from inuqueue.standin.config import StandinConfig
from inuqueue.standin.options import OPTION_DEFAULTS
from inuqueue.standin.progress import ProgressState, TaskRegistry
from inuqueue.standin.webhttp import parse_api_auth


class _Counter:
    """A monotonic count that coroutines can wait on without polling."""

    def __init__(self) -> None:
        self.value = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def increment(self) -> None:
        self.value += 1
        still_waiting = []
        for target, future in self._waiters:
            if future.done():
                continue
            if self.value >= target:
                future.set_result(None)
            else:
                still_waiting.append((target, future))
        self._waiters = still_waiting

    async def wait_for(self, target: int) -> None:
        if self.value >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future


class Standin:
    """Everything a running stand-in knows; tests reach it as ``app[STANDIN]``."""

    def __init__(self, config: StandinConfig) -> None:
        self.config = config
        self.credentials = parse_api_auth(config.api_auth)
        # asyncio.Lock wakes waiters in arrival order: the webui's FIFOLock.
        self.queue_lock = asyncio.Lock()
        self.state = ProgressState()
        self.tasks = TaskRegistry()
        self.options: dict[str, Any] = copy.deepcopy(OPTION_DEFAULTS)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.delay_ms = 0.0
        self._queued = _Counter()
        self._started = _Counter()
        self._finished = _Counter()
        self._holds_reached = _Counter()
        self.generations_held = 0
        self._hold_point: tuple[int, int] | None = None
        self._released = asyncio.Event()
        self._released.set()
        self._fail_remaining = 0
        self._fail_status = 500
        self._drop_remaining = 0
        self._drop_after_bytes = 0

    @property
    def generations_started(self) -> int:
        """Generations that took the queue lock and began, in total."""
        return self._started.value

    @property
    def generations_finished(self) -> int:
        """Generations that left the queue lock, whatever their outcome."""
        return self._finished.value

    def fail_next(self, count: int, status: int = 500) -> None:
        """Make the next ``count`` generations fail with a webui 500-shaped body."""
        self._fail_remaining = count
        self._fail_status = status

    def drop_next(self, count: int, after_bytes: int = 0) -> None:
        """Cut the connection of the next ``count`` generation replies mid-body."""
        self._drop_remaining = count
        self._drop_after_bytes = after_bytes

    def hold(self, at_step: int = 0, at_job: int = 0) -> None:
        """Park every generation before sampling step ``at_step`` of job ``at_job``."""
        self._hold_point = (at_job, at_step)
        self._released.clear()

    def release(self) -> None:
        """Let parked generations go on, and stop parking new ones."""
        self._hold_point = None
        self._released.set()

    def interrupt(self) -> None:
        """What POST /sdapi/v1/interrupt does."""
        self.state.interrupt()

    def skip(self) -> None:
        """What POST /sdapi/v1/skip does."""
        self.state.skip()

    @property
    def generations_queued(self) -> int:
        """Generation requests that passed validation and queued for the lock."""
        return self._queued.value

    async def wait_queued(self, count: int) -> None:
        """Return once ``count`` generation requests have queued for the lock."""
        await self._queued.wait_for(count)

    async def wait_generations(self, count: int) -> None:
        """Return once ``count`` generations have started in total."""
        await self._started.wait_for(count)

    async def wait_finished(self, count: int) -> None:
        """Return once ``count`` generations have finished in total."""
        await self._finished.wait_for(count)

    async def wait_held(self, count: int = 1) -> None:
        """Return once generations reached the hold point ``count`` times in total."""
        await self._holds_reached.wait_for(count)

    def mark_queued(self) -> None:
        """Called by a generation request just before it waits for the lock."""
        self._queued.increment()

    def mark_started(self) -> None:
        """Called by a generation as soon as its job has begun."""
        self._started.increment()

    def mark_finished(self) -> None:
        """Called by a generation when it leaves the queue lock."""
        self._finished.increment()

    async def pause_point(self, job_no: int, step: int) -> None:
        """Called before every sampling step: parks there while held at this point."""
        if self._hold_point != (job_no, step):
            return
        self.generations_held += 1
        self._holds_reached.increment()
        try:
            await self._released.wait()
        finally:
            self.generations_held -= 1

    def take_failure(self) -> int | None:
        """Consume one injected failure: its HTTP status, or None."""
        if self._fail_remaining <= 0:
            return None
        self._fail_remaining -= 1
        return self._fail_status

    def take_drop(self) -> int | None:
        """Consume one injected connection drop: bytes of body to send, or None."""
        if self._drop_remaining <= 0:
            return None
        self._drop_remaining -= 1
        return self._drop_after_bytes

    def stats(self) -> dict[str, Any]:
        """The knobs and counters, for GET /_standin/stats."""
        return {
            "generations_queued": self.generations_queued,
            "generations_started": self.generations_started,
            "generations_finished": self.generations_finished,
            "generations_held": self.generations_held,
            "holds_reached": self._holds_reached.value,
            "held": self._hold_point is not None,
            "hold_point": None
            if self._hold_point is None
            else {"at_job": self._hold_point[0], "at_step": self._hold_point[1]},
            "fail_next": self._fail_remaining,
            "fail_status": self._fail_status,
            "drop_next": self._drop_remaining,
            "drop_after_bytes": self._drop_after_bytes,
            "delay_ms": self.delay_ms,
            "requests": len(self.requests),
            "queue_locked": self.queue_lock.locked(),
        }


# Tests and the route handlers reach the live state through this key.
STANDIN = web.AppKey("standin", Standin)
