"""SIGKILL at random moments under load: what was acknowledged survives (D1, D2, D5)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import API, DaemonProcess, StandinHandle

SEEDS = range(6)
# Bounds of one run's workload and of the moment it is killed.
MAX_OPS = 400
KILL_AFTER_S = (0.05, 0.6)


class Workload:
    """Random enqueues and cancels; remembers what the daemon acknowledged."""

    def __init__(self, url: str, rng: random.Random) -> None:
        self.url = url
        self.rng = rng
        self.enqueued: dict[str, str] = {}  # idempotency key -> task id
        self.cancelled: set[str] = set()
        self.unanswered_keys: list[str] = []

    async def run(self, http: aiohttp.ClientSession) -> None:
        for n in range(MAX_OPS):
            if self.enqueued and self.rng.random() < 0.25:
                await self._cancel(http, self.rng.choice(list(self.enqueued.values())))
            else:
                await self._enqueue(http, f"key-{n}")

    async def _enqueue(self, http: aiohttp.ClientSession, key: str) -> None:
        body = {"prompt": key, "steps": self.rng.randint(1, 8)}
        self.unanswered_keys.append(key)
        async with http.post(
            f"{self.url}{API}/queue/txt2img",
            json=body,
            headers={"Idempotency-Key": key},
        ) as response:
            assert response.status == 202, await response.text()
            self.enqueued[key] = (await response.json())["task_id"]
        self.unanswered_keys.remove(key)

    async def _cancel(self, http: aiohttp.ClientSession, task_id: str) -> None:
        async with http.delete(f"{self.url}{API}/task/{task_id}") as response:
            if response.status == 200 and (await response.json())["status"] in (
                "cancelled",
                "interrupted",
            ):
                self.cancelled.add(task_id)


async def _tasks(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    async with http.get(f"{url}{API}/queue?limit=500") as response:
        queue = await response.json()
    async with http.get(f"{url}{API}/history?limit=500") as response:
        history = await response.json()
    for task in [*queue["running"], *queue["pending"], *history["tasks"]]:
        assert task["task_id"] not in tasks, "a task is listed twice"
        tasks[task["task_id"]] = task
    return tasks


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_kill_at_any_moment_loses_no_acknowledged_change(
    seed: int,
    standin: StandinHandle,
    tmp_path: Path,
    daemon_processes: Callable[[list[str]], DaemonProcess],
) -> None:
    rng = random.Random(seed)
    standin.state.delay_ms = 0
    args = ["--upstream", standin.url, "--data", str(tmp_path / "data")]
    first = daemon_processes(args)
    url = await first.start()
    workload = Workload(url, rng)

    async with aiohttp.ClientSession() as http:
        running = asyncio.create_task(workload.run(http))
        # A random moment of the run: the properties below hold for every one.
        done, _ = await asyncio.wait({running}, timeout=rng.uniform(*KILL_AFTER_S))
        await first.kill()
        if not done:
            running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    second = daemon_processes(args)
    url = await second.start()
    async with aiohttp.ClientSession() as http:
        tasks = await _tasks(http, url)
        for key, task_id in workload.enqueued.items():
            assert task_id in tasks, f"acknowledged enqueue {key} was lost"
        for task_id in workload.cancelled:
            assert tasks[task_id]["status"] in ("cancelled", "interrupted")
        running_now = [t for t in tasks.values() if t["status"] == "running"]
        assert len(running_now) <= 1

        # A client retrying what got no answer, with the same key, never makes a
        # second task: every key ends with exactly one task.
        for key in workload.unanswered_keys:
            async with http.post(
                f"{url}{API}/queue/txt2img",
                json={"prompt": key},
                headers={"Idempotency-Key": key},
            ) as response:
                assert response.status in (200, 202)
        prompts = []
        for task_id in await _tasks(http, url):
            async with http.get(f"{url}{API}/task/{task_id}") as response:
                prompts.append((await response.json())["request"]["prompt"])
        assert sorted(prompts) == sorted(
            {*workload.enqueued, *workload.unanswered_keys}
        )
