"""The webui behind a fault proxy: down, cut off, reset mid-answer, slow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from tests.conftest import Daemon, StandinHandle, hold_a_running_task, started_daemon
from tests.faultproxy import FaultProxy


@pytest.fixture
async def proxy(standin: StandinHandle) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the stand-in."""
    fault_proxy = FaultProxy(standin.server.port or 0)
    await fault_proxy.start()
    yield fault_proxy
    await fault_proxy.close()


@pytest.fixture
async def faulty(
    aiohttp_client: AiohttpClient, proxy: FaultProxy, tmp_path: Path
) -> AsyncIterator[Daemon]:
    """A daemon whose webui is reached through the fault proxy."""
    daemon = await started_daemon(
        aiohttp_client, f"http://127.0.0.1:{proxy.port}", tmp_path / "data"
    )
    yield daemon
    await daemon.stop()


async def test_a_webui_that_goes_down_mid_generation_gets_the_task_again(
    faulty: Daemon, proxy: FaultProxy, standin: StandinHandle
) -> None:
    task_id = await hold_a_running_task(faulty, standin)

    # The webui "restarts": every connection breaks, and for a moment none is taken.
    port = proxy.port
    await proxy.close()
    queue = faulty.runtime.queue
    await queue.wait_until(lambda: queue.state.tasks[task_id].status == "pending")
    standin.state.release()
    await proxy.start(port)
    task = await faulty.wait_status(task_id, "done")

    assert task["attempts"] == 2
    assert queue.state.running == {}


async def test_an_answer_reset_halfway_is_retried(
    faulty: Daemon, proxy: FaultProxy
) -> None:
    proxy.faults.cut_after_bytes = 600
    proxy.faults.cut_count = 1

    task = await faulty.wait_status(await faulty.enqueue({"batch_size": 3}), "done")

    assert task["attempts"] == 2
    assert len(task["images"]) == 3
    tmp = faulty.config.data_dir / "images" / "tmp"
    assert list(tmp.iterdir()) == []


async def test_a_webui_that_resets_every_answer_fails_the_task_at_the_limit(
    faulty: Daemon, proxy: FaultProxy
) -> None:
    proxy.faults.cut_after_bytes = 100
    proxy.faults.cut_count = 100

    doomed = await faulty.wait_status(await faulty.enqueue(), "failed")
    proxy.faults.cut_count = 0
    fine = await faulty.wait_status(await faulty.enqueue(), "done")

    assert (doomed["attempts"], doomed["error"]["reason"]) == (3, "interrupted")
    assert fine["attempts"] == 1


async def test_a_slow_webui_is_waited_for(faulty: Daemon, proxy: FaultProxy) -> None:
    proxy.faults.delay_s = 0.05

    task = await faulty.wait_status(await faulty.enqueue({"batch_size": 2}), "done")

    assert (task["attempts"], len(task["images"])) == (1, 2)


async def test_a_webui_silent_past_the_read_timeout_counts_as_broken(
    aiohttp_client: AiohttpClient, proxy: FaultProxy, tmp_path: Path
) -> None:
    daemon = await started_daemon(
        aiohttp_client,
        f"http://127.0.0.1:{proxy.port}",
        tmp_path / "data",
        generation_read_timeout_s=0.05,
        max_attempts=2,
    )
    proxy.faults.delay_s = 0.5

    task = await daemon.wait_status(await daemon.enqueue(), "failed")

    assert task["attempts"] == 2
    assert "Timeout" in task["error"]["message"]
    proxy.faults.delay_s = 0.0
    await daemon.stop()
