"""The consumer against a webui that fails, breaks off, or is not there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from inuqueue.config import Config
from inuqueue.standin import STANDIN, StandinConfig, create_standin_app
from tests.conftest import API, Daemon, StandinHandle, free_port, started_daemon


async def test_a_webui_error_fails_the_task_and_the_queue_goes_on(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.fail_next(1, status=500)
    failing = await daemon.enqueue({"prompt": "boom"})
    fine = await daemon.enqueue({"prompt": "fine"})

    failed = await daemon.wait_status(failing, "failed")
    done = await daemon.wait_status(fine, "done")

    assert failed["error"]["status"] == 500
    assert failed["error"]["reason"] == "webui_error"
    assert failed["error"]["body"]["error"] == "RuntimeError"
    assert failed["images"] == []
    assert done["images"]


async def test_a_connection_dropped_mid_answer_is_retried(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.drop_next(1, after_bytes=200)

    task = await daemon.wait_status(await daemon.enqueue(), "done")

    assert task["attempts"] == 2
    assert len(standin.state.requests) == 2
    assert list((daemon.config.data_dir / "images" / "tmp").iterdir()) == []


async def test_a_task_that_always_breaks_off_fails_after_the_attempt_limit(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.drop_next(10, after_bytes=0)
    doomed = await daemon.enqueue({"prompt": "crashes the webui"})

    task = await daemon.wait_status(doomed, "failed")

    assert task["attempts"] == daemon.config.max_attempts == 3
    assert task["error"]["reason"] == "interrupted"
    assert "3 times" in task["error"]["message"]
    assert len(standin.state.requests) == 3


async def test_one_generation_at_a_time(daemon: Daemon, standin: StandinHandle) -> None:
    standin.state.hold()
    ids = [await daemon.enqueue({"prompt": str(n)}) for n in range(3)]
    await standin.state.wait_generations(1)

    queue = await (await daemon.client.get(f"{API}/queue")).json()
    assert len(queue["running"]) == 1
    assert len(standin.state.requests) == 1

    standin.state.release()
    for task_id in ids:
        await daemon.wait_status(task_id, "done")
    assert standin.state.generations_started == 3


async def test_tasks_wait_while_the_webui_is_down_and_run_when_it_is_up(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    port = free_port()
    daemon = await started_daemon(
        aiohttp_client, f"http://127.0.0.1:{port}", tmp_path / "data"
    )
    with structlog.testing.capture_logs() as logs:
        task_id = await daemon.enqueue()
        queue = daemon.runtime.queue
        await queue.wait_until(lambda: daemon.runtime.upstream.reachable is False)

        health = await (await daemon.client.get(f"{API}/health")).json()
        assert health["status"] == "degraded"
        assert health["upstream"]["reachable"] is False
        assert queue.state.tasks[task_id].status == "pending"

        app = create_standin_app(StandinConfig(step_ms=0))
        await aiohttp_server(app, port=port)
        task = await daemon.wait_status(task_id, "done")

    assert task["attempts"] == 1
    assert app[STANDIN].generations_started == 1
    events = [entry["event"] for entry in logs]
    assert events.count("upstream.unreachable") == 1
    await daemon.stop()


async def test_a_webui_started_without_api_fails_tasks_with_a_hint(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"detail": "Not Found"}, status=404)

    bare = web.Application()
    bare.router.add_route("*", "/{tail:.*}", not_found)
    server = await aiohttp_server(bare)
    config = Config(upstream=str(server.make_url("")), data_dir=tmp_path / "d")
    daemon = Daemon(aiohttp_client, config)
    await daemon.start()

    task = await daemon.wait_status(await daemon.enqueue(), "failed")

    assert task["error"]["status"] == 404
    assert "--api" in task["error"]["message"]
    await daemon.stop()


async def test_a_task_cancelled_while_the_webui_is_down_is_never_sent(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    port = free_port()
    daemon = await started_daemon(
        aiohttp_client, f"http://127.0.0.1:{port}", tmp_path / "data"
    )
    cancelled = await daemon.enqueue({"prompt": "cancelled"})
    queue = daemon.runtime.queue
    await queue.wait_until(lambda: daemon.runtime.upstream.reachable is False)
    response = await daemon.client.delete(f"{API}/task/{cancelled}")
    assert response.status == 200

    app = create_standin_app(StandinConfig(step_ms=0))
    await aiohttp_server(app, port=port)
    kept = await daemon.wait_status(await daemon.enqueue({"prompt": "kept"}), "done")

    assert kept["attempts"] == 1
    assert [body["prompt"] for _, body in app[STANDIN].requests] == ["kept"]
    await daemon.stop()


async def test_a_webui_that_says_not_now_gets_the_task_again_later(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.fail_next(1, status=503)

    task = await daemon.wait_status(await daemon.enqueue(), "done")

    assert task["attempts"] == 1
    assert len(standin.state.requests) == 2


async def test_a_fault_of_inuqueue_s_own_does_not_stop_the_queue(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    await daemon.restart(storage_retry_s=0.01)
    consumer = daemon.runtime.consumer
    assert consumer is not None
    real_finish = consumer._finish
    calls = []

    async def finish_once_broken(task: Any, answer: Any) -> None:
        calls.append(task.task_id)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        await real_finish(task, answer)

    monkeypatch.setattr(consumer, "_finish", finish_once_broken)

    task = await daemon.wait_status(await daemon.enqueue(), "done")

    assert task["attempts"] == 2


async def test_an_image_directory_removed_under_the_daemon_comes_back(
    daemon: Daemon,
) -> None:
    import shutil

    shutil.rmtree(daemon.config.data_dir / "images")

    task = await daemon.wait_status(await daemon.enqueue(), "done")

    assert daemon.runtime.store.exists(task["images"][0]["digest"])
