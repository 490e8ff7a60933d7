"""Queue control: cancel, interrupt, pause, move, edit, requeue, clear, history."""

from __future__ import annotations

from typing import Any

from tests.conftest import (
    API,
    Daemon,
    StandinHandle,
    delete_while_held,
    hold_a_running_task,
)


async def _json(daemon: Daemon, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    response = await daemon.client.request(method, API + path, **kw)
    return response.status, await response.json()


async def test_a_cancelled_pending_task_never_runs(
    daemon: Daemon, standin: StandinHandle
) -> None:
    running = await hold_a_running_task(daemon, standin, {"prompt": "running"})
    doomed = await daemon.enqueue({"prompt": "doomed"})

    status, task = await _json(daemon, "DELETE", f"/task/{doomed}")
    assert (status, task["status"]) == (200, "cancelled")
    assert task["finished_at"]

    standin.state.release()
    await daemon.wait_status(running, "done")
    await daemon.restart()
    assert (await daemon.wait_status(doomed, "cancelled"))["attempts"] == 0
    prompts = [body["prompt"] for _, body in standin.state.requests]
    assert prompts == ["running"]


async def test_a_running_task_is_interrupted_at_the_webui_and_keeps_its_images(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.hold(at_step=2)
    task_id = await daemon.enqueue({"steps": 20, "n_iter": 3, "batch_size": 2})
    await standin.state.wait_held(1)

    response = await delete_while_held(
        daemon, standin, task_id, f"{API}/task/{task_id}"
    )
    task = await response.json()

    assert (response.status, task["status"]) == (200, "interrupted")
    # Interrupted in the first of three batches: that batch's two partial images.
    assert len(task["images"]) == 2
    assert standin.state.state.sampling_step < 19


async def test_a_finished_task_cannot_be_cancelled(daemon: Daemon) -> None:
    task_id = await daemon.enqueue()
    await daemon.wait_status(task_id, "done")

    status, body = await _json(daemon, "DELETE", f"/task/{task_id}")

    assert status == 409
    assert body["error"] == "task_conflict"
    assert body["status_now"] == "done"


async def test_pause_lets_the_running_task_finish_and_survives_a_restart(
    daemon: Daemon, standin: StandinHandle
) -> None:
    first = await hold_a_running_task(daemon, standin, {"prompt": "first"})
    second = await daemon.enqueue({"prompt": "second"})

    assert await _json(daemon, "POST", "/queue/pause") == (200, {"paused": True})
    standin.state.release()
    await daemon.wait_status(first, "done")
    await daemon.restart()

    _, queue = await _json(daemon, "GET", "/queue")
    assert queue["paused"] is True
    assert [t["task_id"] for t in queue["pending"]] == [second]
    assert standin.state.generations_started == 1

    assert await _json(daemon, "POST", "/queue/resume") == (200, {"paused": False})
    await daemon.wait_status(second, "done")


async def test_moves_reorder_the_pending_queue(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await hold_a_running_task(daemon, standin, {"prompt": "running"})
    a, b, c, d = [await daemon.enqueue({"prompt": p}) for p in "abcd"]

    async def order() -> list[str]:
        return [
            t["task_id"] for t in (await _json(daemon, "GET", "/queue"))[1]["pending"]
        ]

    assert (await _json(daemon, "POST", f"/task/{d}/move", json={"to": "top"}))[
        0
    ] == 200
    assert await order() == [d, a, b, c]
    await _json(daemon, "POST", f"/task/{d}/move", json={"to": "bottom"})
    assert await order() == [a, b, c, d]
    await _json(daemon, "POST", f"/task/{d}/move", json={"before": b})
    assert await order() == [a, d, b, c]
    await _json(daemon, "POST", f"/task/{a}/move", json={"after": c})
    assert await order() == [d, b, c, a]

    await daemon.restart()
    assert await order() == [d, b, c, a]
    standin.state.release()


async def test_a_move_to_the_top_outranks_higher_priorities(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await hold_a_running_task(daemon, standin)
    urgent = await daemon.enqueue({"priority": 9})
    low = await daemon.enqueue({"priority": -1})

    status, task = await _json(daemon, "POST", f"/task/{low}/move", json={"to": "top"})

    assert (status, task["position"], task["priority"]) == (200, 0, 9)
    assert (await _json(daemon, "GET", f"/task/{urgent}"))[1]["position"] == 1
    standin.state.release()


async def test_repeated_moves_between_two_tasks_keep_the_order(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await hold_a_running_task(daemon, standin)
    first, last = await daemon.enqueue(), await daemon.enqueue()
    movers = [await daemon.enqueue() for _ in range(60)]

    # Each mover squeezes in right after `first`, halving the gap every time,
    # until the ranks run out of float precision and get renumbered.
    for mover in movers:
        await _json(daemon, "POST", f"/task/{mover}/move", json={"after": first})

    pending = (await _json(daemon, "GET", "/queue?limit=100"))[1]["pending"]
    assert [t["task_id"] for t in pending] == [first, *reversed(movers), last]
    standin.state.release()


async def test_bad_moves_are_refused(daemon: Daemon, standin: StandinHandle) -> None:
    running = await hold_a_running_task(daemon, standin)
    pending = await daemon.enqueue()

    cases = [
        (running, {"to": "top"}, 409),
        (pending, {"to": "sideways"}, 422),
        (pending, {"to": "top", "after": running}, 422),
        (pending, {"before": "no-such-task"}, 404),
        (pending, {"before": running}, 409),
    ]
    for task_id, body, expected in cases:
        status, answer = await _json(daemon, "POST", f"/task/{task_id}/move", json=body)
        assert status == expected, body
        assert answer["message"]
    standin.state.release()


async def test_edit_renames_any_task_and_reprioritises_pending_ones(
    daemon: Daemon, standin: StandinHandle
) -> None:
    done = await daemon.enqueue()
    await daemon.wait_status(done, "done")
    standin.state.hold()
    await daemon.enqueue()
    await standin.state.wait_generations(2)
    a, b = await daemon.enqueue(), await daemon.enqueue()

    status, task = await _json(daemon, "PATCH", f"/task/{b}", json={"priority": 3})
    assert (status, task["position"]) == (200, 0)
    status, task = await _json(daemon, "PATCH", f"/task/{done}", json={"name": "keep"})
    assert (status, task["name"]) == (200, "keep")
    assert (await _json(daemon, "PATCH", f"/task/{done}", json={"priority": 1}))[
        0
    ] == 409
    assert (await _json(daemon, "PATCH", f"/task/{a}", json={"priority": "x"}))[
        0
    ] == 422
    assert (await _json(daemon, "PATCH", f"/task/{a}", json={}))[0] == 422

    await daemon.restart()
    assert (await _json(daemon, "GET", f"/task/{done}"))[1]["name"] == "keep"
    standin.state.release()


async def test_requeue_makes_a_new_task_with_the_same_request(
    daemon: Daemon, standin: StandinHandle
) -> None:
    original = await daemon.enqueue({"prompt": "again", "seed": 5})
    await daemon.wait_status(original, "done")

    response = await daemon.client.post(f"{API}/task/{original}/requeue")
    answer = await response.json()
    assert response.status == 202
    new_id = answer["task_id"]
    assert new_id != original
    assert response.headers["Location"] == f"{API}/task/{new_id}"

    task = await daemon.wait_status(new_id, "done")
    assert task["requeued_from"] == original
    assert (await _json(daemon, "GET", f"/task/{original}"))[1]["requeued_as"] == new_id
    assert standin.state.requests[-1][1]["prompt"] == "again"


async def test_requeue_failed_queues_each_failed_task_once(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.fail_next(2)
    failed = [await daemon.enqueue({"prompt": str(n)}) for n in range(2)]
    for task_id in failed:
        await daemon.wait_status(task_id, "failed")

    status, answer = await _json(daemon, "POST", "/queue/requeue-failed")
    assert (status, answer["count"]) == (200, 2)
    for task_id in answer["task_ids"]:
        await daemon.wait_status(task_id, "done")

    assert (await _json(daemon, "POST", "/queue/requeue-failed"))[1]["count"] == 0


async def test_clear_cancels_every_pending_task(
    daemon: Daemon, standin: StandinHandle
) -> None:
    running = await hold_a_running_task(daemon, standin)
    pending = [await daemon.enqueue() for _ in range(3)]

    status, answer = await _json(daemon, "POST", "/queue/clear")

    assert (status, answer["cancelled"]) == (200, pending)
    queue = (await _json(daemon, "GET", "/queue"))[1]
    assert queue["total_pending"] == 0
    assert [t["task_id"] for t in queue["running"]] == [running]
    standin.state.release()


async def test_history_is_newest_first_filtered_and_paged(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.fail_next(1)
    failed = await daemon.enqueue()
    await daemon.wait_status(failed, "failed")
    done = [await daemon.enqueue() for _ in range(3)]
    await daemon.wait_status(done[-1], "done")

    _, everything = await _json(daemon, "GET", "/history")
    assert [t["task_id"] for t in everything["tasks"]] == [*reversed(done), failed]
    assert everything["total"] == 4
    _, only_failed = await _json(daemon, "GET", "/history?status=failed")
    assert [t["task_id"] for t in only_failed["tasks"]] == [failed]
    _, page = await _json(daemon, "GET", "/history?status=done,failed&limit=2&offset=1")
    assert [t["task_id"] for t in page["tasks"]] == [done[1], done[0]]
    assert page["total"] == 4

    for query in ["status=running", "status=nope", "limit=501"]:
        assert (await _json(daemon, "GET", f"/history?{query}"))[0] == 400, query


async def test_forgetting_history_removes_only_images_nobody_points_at(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await daemon.restart(image_grace_s=0.0)
    standin.state.fail_next(1)
    failed = await daemon.enqueue()
    await daemon.wait_status(failed, "failed")
    # The same seed makes the same picture: one file, two tasks pointing at it.
    first = await daemon.wait_status(await daemon.enqueue({"seed": 3}), "done")
    second = await daemon.wait_status(await daemon.enqueue({"seed": 3}), "done")
    digest = first["images"][0]["digest"]
    assert second["images"][0]["digest"] == digest
    store, collector = daemon.runtime.store, daemon.runtime.collector

    status, answer = await _json(daemon, "DELETE", "/history?status=failed")
    assert (status, answer["task_ids"]) == (200, [failed])
    assert (await _json(daemon, "GET", f"/task/{failed}"))[0] == 404

    await _json(daemon, "DELETE", "/history?status=done")
    await collector.sweep()
    assert not store.exists(digest)
    assert (await _json(daemon, "GET", "/history"))[1]["total"] == 0


async def test_an_image_still_pointed_at_is_kept(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await daemon.restart(image_grace_s=0.0)
    first = await daemon.wait_status(await daemon.enqueue({"seed": 8}), "done")
    standin.state.fail_next(1)
    await daemon.wait_status(await daemon.enqueue(), "failed")
    digest = first["images"][0]["digest"]

    await _json(daemon, "DELETE", "/history?status=failed")
    await daemon.runtime.collector.sweep()

    assert daemon.runtime.store.exists(digest)
