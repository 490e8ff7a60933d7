"""Restarts and crashes: what was acknowledged survives, nothing runs twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from inuqueue.journal import encode_record
from tests.conftest import (
    API,
    Daemon,
    DaemonProcess,
    StandinHandle,
    poll_until,
    run_inuqueue,
)


async def _statuses(url: str, task_ids: list[str]) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        tasks = {}
        for task_id in task_ids:
            async with http.get(f"{url}{API}/task/{task_id}") as response:
                assert response.status == 200
                tasks[task_id] = await response.json()
        return tasks


async def test_sigkill_with_tasks_running_and_pending_loses_none(
    standin: StandinHandle,
    tmp_path: Path,
    daemon_processes: Callable[[list[str]], DaemonProcess],
) -> None:
    args = ["--upstream", standin.url, "--data", str(tmp_path / "data")]
    first = daemon_processes(args)
    url = await first.start()
    standin.state.hold()
    task_ids = []
    async with aiohttp.ClientSession() as http:
        for n in range(4):
            body = {"prompt": f"task {n}", "steps": 2, "seed": n}
            async with http.post(f"{url}{API}/queue/txt2img", json=body) as response:
                assert response.status == 202
                task_ids.append((await response.json())["task_id"])
    await standin.state.wait_generations(1)

    await first.kill()
    standin.state.release()

    second = daemon_processes(args)
    url = await second.start()

    async def all_done() -> dict[str, dict[str, Any]] | None:
        tasks = await _statuses(url, task_ids)
        finished = all(t["status"] == "done" for t in tasks.values())
        return tasks if finished else None

    tasks = await poll_until(all_done)
    assert [t["attempts"] for t in tasks.values()] == [2, 1, 1, 1]
    assert all(t["images"] for t in tasks.values())
    sent = [body["force_task_id"] for _, body in standin.state.requests]
    # The killed attempt is the only repeat: the first task, sent twice.
    assert sent.count(task_ids[0]) == 2
    assert sorted(set(sent)) == sorted(task_ids)


def _journal(path: Path, records: list[dict[str, Any]]) -> bytes:
    lines = []
    for seq, record in enumerate(records, start=1):
        full = {"seq": seq, "ts": f"2026-01-01T00:00:0{seq}.000Z", **record}
        lines.append(encode_record(full))
    data = b"".join(lines)
    path.mkdir(parents=True, exist_ok=True)
    (path / "journal.jsonl").write_bytes(data)
    return data


def _enqueue(task_id: str) -> dict[str, Any]:
    task = {"task_id": task_id, "type": "txt2img", "request": {"steps": 1}}
    return {"op": "enqueue", "task": task}


async def test_a_task_found_running_at_start_runs_again_with_its_attempt_counted(
    daemon: Daemon,
) -> None:
    await daemon.stop()
    _journal(
        daemon.config.data_dir,
        [_enqueue("t1"), {"op": "start", "task_id": "t1"}, _enqueue("t2")],
    )

    await daemon.start()
    task = await daemon.wait_status("t1", "done")

    assert task["attempts"] == 2
    assert (await daemon.wait_status("t2", "done"))["attempts"] == 1


async def test_a_task_found_running_past_the_attempt_limit_fails(
    daemon: Daemon,
) -> None:
    await daemon.stop()
    start = {"op": "start", "task_id": "t1"}
    retry = {"op": "retry", "task_id": "t1", "reason": "reset"}
    _journal(daemon.config.data_dir, [_enqueue("t1"), start, retry, start])

    await daemon.start(max_attempts=2)
    task = await daemon.wait_status("t1", "failed")

    assert task["error"]["reason"] == "interrupted"
    assert task["attempts"] == 2


async def test_a_graceful_restart_keeps_the_pending_queue_in_order(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.hold()
    ids = [
        await daemon.enqueue({"prompt": str(n), "priority": n % 2}) for n in range(5)
    ]
    await standin.state.wait_generations(1)
    await daemon.stop()

    await daemon.start()
    after = await (await daemon.client.get(f"{API}/queue")).json()

    # The running task was handed back and takes its place again: priority 1
    # first, then arrival order.
    expected = [ids[1], ids[3], ids[0], ids[2], ids[4]]
    listed = [t["task_id"] for t in after["running"] + after["pending"]]
    assert listed == expected
    assert all(t["attempts"] == 0 for t in after["pending"])
    standin.state.release()


async def _serve_once(args: list[str]) -> tuple[int, str]:
    result = await asyncio.to_thread(run_inuqueue, "serve", "--port", "0", *args)
    return result.returncode, result.stderr


async def test_a_damaged_middle_line_stops_start_up_naming_file_and_line(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    raw = _journal(data, [_enqueue("t1"), _enqueue("t2"), _enqueue("t3")])
    lines = raw.splitlines(keepends=True)
    damaged = lines[1].replace(b'"t2"', b'"tX"')
    (data / "journal.jsonl").write_bytes(lines[0] + damaged + lines[2])

    code, stderr = await _serve_once(["--data", str(data)])

    assert code == 65
    assert f"{data / 'journal.jsonl'}:2" in stderr
    assert "inuqueue journal repair" in stderr


async def test_a_torn_last_line_is_cut_and_the_rest_served(
    daemon: Daemon,
) -> None:
    await daemon.stop()
    raw = _journal(daemon.config.data_dir, [_enqueue("t1"), _enqueue("t2")])
    journal = daemon.config.data_dir / "journal.jsonl"
    journal.write_bytes(raw[:-20])

    await daemon.start()

    assert set(daemon.runtime.queue.state.tasks) == {"t1"}
    assert journal.read_bytes() == raw.splitlines(keepends=True)[0]
    (aside,) = daemon.config.data_dir.glob("journal.jsonl.torn-*")
    assert aside.read_bytes() == raw.splitlines(keepends=True)[1][:-20]


async def test_a_record_missing_a_field_stops_start_up_naming_the_line(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    _journal(
        data,
        [
            _enqueue("t1"),
            {"op": "start", "task_id": "t1"},
            {"op": "finish", "task_id": "t1"},
        ],
    )

    code, stderr = await _serve_once(["--data", str(data)])

    assert code == 65
    assert f"{data / 'journal.jsonl'}:3" in stderr
    assert "'status'" in stderr
