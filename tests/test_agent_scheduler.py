"""The Agent Scheduler compatible API, driven the way that extension's scripts do.

Every answer is checked against the reference's shapes (TaskModel, the queue status,
the history, the success/message envelopes); where inuqueue differs on purpose, the
checks follow /work/notes/issue4-interface.md.
"""

from __future__ import annotations

import base64
import io
import struct
import time
import uuid
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from inuqueue.standin.catalog import CHECKPOINTS, SAMPLERS
from tests.conftest import (
    API,
    Daemon,
    StandinHandle,
    delete_while_held,
    hold_a_running_task,
    poll_until,
    tiny_png,
)

AS = "/agent-scheduler/v1"
FIXTURES = Path(__file__).parent / "fixtures"
TASK_KEYS = {
    "id",
    "api_task_id",
    "api_task_callback",
    "name",
    "type",
    "status",
    "params",
    "priority",
    "position",
    "result",
    "bookmarked",
    "created_at",
    "updated_at",
}
STATUSES = {"pending", "running", "done", "failed", "interrupted", "cancelled"}
FINISHED = {"done", "failed", "interrupted"}
# Image fields never shown in params, to keep listings small.
HIDDEN_PARAMS = {"alwayson_scripts", "script_args", "init_images", "mask"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Epoch-ms timestamps must lie after 2020 and not far in the future.
EPOCH_MS_MIN = 1_577_836_800_000
EPOCH_MS_SLACK = 86_400_000


# --- the reference's shapes -------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_stamp(value: Any, stamps: str) -> float:
    """An epoch-ms int ("ms") or an ISO-8601 string ("iso"); seconds since epoch."""
    if stamps == "ms":
        assert _is_int(value), value
        assert EPOCH_MS_MIN < value < time.time() * 1000 + EPOCH_MS_SLACK, value
        return float(value) / 1000
    assert isinstance(value, str), value
    return datetime.fromisoformat(value).timestamp()


def check_task(task: Any, stamps: str) -> dict[str, Any]:
    """A TaskModel; timestamps as epoch ms ("ms") or ISO strings ("iso")."""
    assert isinstance(task, dict), task
    assert set(task) == TASK_KEYS, set(task) ^ TASK_KEYS
    assert isinstance(task["id"], str)
    assert uuid.UUID(task["id"]).version == 4
    assert task["api_task_id"] is None
    assert task["api_task_callback"] is None or isinstance(
        task["api_task_callback"], str
    )
    assert task["name"] is None or isinstance(task["name"], str)
    assert task["type"] in ("txt2img", "img2img")
    assert task["status"] in STATUSES, task["status"]
    params = task["params"]
    assert isinstance(params, dict)
    assert "checkpoint" in params
    assert not HIDDEN_PARAMS & set(params), HIDDEN_PARAMS & set(params)
    assert _is_int(task["priority"])
    assert task["position"] is None or _is_int(task["position"])
    assert isinstance(task["bookmarked"], bool)
    created = _check_stamp(task["created_at"], stamps)
    updated = _check_stamp(task["updated_at"], stamps)
    assert created <= updated + 1, (task["created_at"], task["updated_at"])
    result = task["result"]
    if task["status"] == "done":
        assert isinstance(result, str), result
        decoded = orjson.loads(result)
        assert isinstance(decoded, dict) and "geninfo" in decoded, decoded
        assert isinstance(decoded["images"], list) and decoded["images"]
        assert all(isinstance(url, str) for url in decoded["images"])
    elif task["status"] == "failed":
        assert isinstance(result, str) and result, result
    else:
        assert result is None, result
    return task


def check_queue(body: Any, offset: int = 0) -> dict[str, Any]:
    """A QueueStatusResponse; the running task first, positions offset + index."""
    assert isinstance(body, dict), body
    keys = {"current_task_id", "pending_tasks", "total_pending_tasks", "paused"}
    assert set(body) == keys, set(body) ^ keys
    assert body["current_task_id"] is None or isinstance(body["current_task_id"], str)
    assert _is_int(body["total_pending_tasks"])
    assert isinstance(body["paused"], bool)
    tasks = body["pending_tasks"]
    assert isinstance(tasks, list)
    assert body["total_pending_tasks"] >= offset + len(tasks)
    for index, task in enumerate(tasks):
        check_task(task, "ms")
        assert task["position"] == offset + index, (task["position"], index)
        assert task["status"] in ("pending", "running"), task["status"]
        if task["status"] == "running":
            assert (offset, index) == (0, 0), "the running task is listed first"
            assert body["current_task_id"] == task["id"]
    if body["current_task_id"] is not None and offset == 0:
        assert tasks and tasks[0]["id"] == body["current_task_id"]
        assert tasks[0]["status"] == "running"
    return body


def check_history(body: Any) -> list[dict[str, Any]]:
    """{"tasks": [TaskModel], "total": int}; returns the tasks."""
    assert isinstance(body, dict), body
    assert set(body) == {"tasks", "total"}, set(body)
    assert _is_int(body["total"])
    assert isinstance(body["tasks"], list)
    assert body["total"] >= len(body["tasks"])
    for task in body["tasks"]:
        check_task(task, "ms")
    return list(body["tasks"])


def check_action(body: Any, *extra: str) -> dict[str, Any]:
    """The {"success": bool, "message": str} envelope, plus `extra` keys."""
    assert isinstance(body, dict), body
    assert set(body) == {"success", "message", *extra}, body
    assert isinstance(body["success"], bool)
    assert isinstance(body["message"], str) and body["message"]
    return body


def check_422(body: Any, loc: list[str] | None = None) -> dict[str, Any]:
    """FastAPI's validation shape plus a "message"; `loc` is one of the locations."""
    assert isinstance(body, dict), body
    assert isinstance(body.get("message"), str) and body["message"], body
    detail = body["detail"]
    assert isinstance(detail, list) and detail, body
    for item in detail:
        assert isinstance(item["loc"], list), item
        assert isinstance(item["msg"], str) and item["msg"], item
        assert isinstance(item["type"], str) and item["type"], item
    if loc is not None:
        assert loc in [item["loc"] for item in detail], detail
    return body


# --- calling it ---------------------------------------------------------------------


async def call(daemon: Daemon, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    """One request to the AS API; its status and JSON body."""
    response = await daemon.client.request(method, AS + path, **kw)
    return response.status, await response.json()


async def act(
    daemon: Daemon, method: str, path: str, *extra: str, **kw: Any
) -> dict[str, Any]:
    """An action route: HTTP 200 and the success/message envelope."""
    status, body = await call(daemon, method, path, **kw)
    assert status == 200, (method, path, status, body)
    return check_action(body, *extra)


async def succeeds(daemon: Daemon, method: str, path: str, message: str) -> None:
    """The action answers success true with `message`."""
    body = await act(daemon, method, path)
    assert body == {"success": True, "message": message}, (method, path)


async def refused(daemon: Daemon, method: str, path: str, **kw: Any) -> str:
    """The action answers 200 with success false; returns its message."""
    body = await act(daemon, method, path, **kw)
    assert body["success"] is False, (method, path, body)
    return str(body["message"])


async def enqueue(
    daemon: Daemon, body: dict[str, Any] | None = None, kind: str = "txt2img"
) -> str:
    """Queue a task through the AS API; its id."""
    payload = {"prompt": "a cat", "steps": 2, **(body or {})}
    status, answer = await call(daemon, "POST", f"/queue/{kind}", json=payload)
    assert status == 200, answer
    assert set(answer) == {"task_id"}, answer
    assert uuid.UUID(answer["task_id"]).version == 4
    return str(answer["task_id"])


async def get_task(daemon: Daemon, task_id: str) -> dict[str, Any]:
    """GET /task/{id}: success true and a TaskModel with ISO timestamps."""
    status, body = await call(daemon, "GET", f"/task/{task_id}")
    assert status == 200, body
    assert set(body) == {"success", "data"} and body["success"] is True, body
    task = check_task(body["data"], "iso")
    assert task["id"] == task_id
    if task["status"] == "pending":
        assert _is_int(task["position"]), task["position"]
    elif task["status"] != "running":
        assert task["position"] is None, task
    return task


async def not_found(daemon: Daemon, task_id: str) -> None:
    """GET /task/{id} answers 200, success false, "Task not found"."""
    status, body = await call(daemon, "GET", f"/task/{task_id}")
    assert status == 200
    assert body == {"success": False, "message": "Task not found"}


async def queue(daemon: Daemon, query: str = "") -> dict[str, Any]:
    """GET /queue, checked."""
    status, body = await call(daemon, "GET", f"/queue{query}")
    assert status == 200, body
    offset = 0
    for part in query.lstrip("?").split("&"):
        if part.startswith("offset="):
            offset = int(part.split("=", 1)[1])
    return check_queue(body, offset)


async def queue_ids(daemon: Daemon) -> list[str]:
    """Every id in GET /queue (running first), all of them (limit=0)."""
    return [task["id"] for task in (await queue(daemon, "?limit=0"))["pending_tasks"]]


async def history(daemon: Daemon, query: str = "") -> tuple[list[str], int]:
    """GET /history: its ids in order and its total."""
    status, body = await call(daemon, "GET", f"/history{query}")
    assert status == 200, body
    tasks = check_history(body)
    return [task["id"] for task in tasks], int(body["total"])


async def wait_for(daemon: Daemon, task_id: str, *statuses: str) -> dict[str, Any]:
    """Wait in-process until the task reaches `statuses`; its AS view."""
    await daemon.wait_status(task_id, *statuses)
    return await get_task(daemon, task_id)


async def hold_running(
    daemon: Daemon, standin: StandinHandle, body: dict[str, Any] | None = None
) -> str:
    """Queue a task through the AS API and keep it running at the stand-in."""
    standin.state.hold()
    before = standin.state.generations_started
    task_id = await enqueue(daemon, body)
    await standin.state.wait_generations(before + 1)
    return task_id


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", data[:24]
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def png_texts(data: bytes) -> dict[str, str]:
    """The tEXt and iTXt chunks of a PNG, by key."""
    texts: dict[str, str] = {}
    at = len(PNG_SIGNATURE)
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, payload = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"tEXt":
            key, _, value = payload.partition(b"\0")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = payload.partition(b"\0")
            # Compression flag and method, then language and translated key.
            _, _, rest = rest[2:].partition(b"\0")
            _, _, value = rest.partition(b"\0")
            texts[key.decode("latin-1")] = value.decode("utf-8")
        at += 12 + length
    return texts


def prompts_seen(standin: StandinHandle) -> list[str]:
    """The prompts of every generation the stand-in received, in order."""
    return [str(body["prompt"]) for _, body in standin.state.requests]


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> tuple[str, list[bytes]]:
    """A loopback webhook receiver: its URL and the bodies it got."""
    bodies: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook")), bodies


def fixture_body(callback_url: str) -> dict[str, Any]:
    """The real Agent Scheduler enqueue body, its callback aimed at our receiver."""
    body: dict[str, Any] = orjson.loads(
        (FIXTURES / "queue-txt2img-agent-scheduler.json").read_bytes()
    )
    body["callback_url"] = callback_url
    return body


# --- scripted flows -----------------------------------------------------------------


async def test_a_script_queues_txt2img_polls_it_and_fetches_its_results(
    daemon: Daemon, standin: StandinHandle, receiver: tuple[str, list[bytes]]
) -> None:
    hook_url, _ = receiver
    body = fixture_body(hook_url)
    task_id = await enqueue(daemon, body)

    async def finished() -> dict[str, Any] | None:
        listed = [t["id"] for t in (await queue(daemon, "?limit=0"))["pending_tasks"]]
        task = await get_task(daemon, task_id)
        if task["status"] in ("pending", "running"):
            assert task_id in listed
            return None
        return task

    task = await poll_until(finished)
    assert task["status"] == "done"
    assert task["type"] == "txt2img"
    assert task["api_task_callback"] == hook_url
    assert task["params"]["prompt"] == body["prompt"]
    assert task["params"]["steps"] == 24
    assert "v1-5-pruned-emaonly" in task["params"]["checkpoint"]
    sent = standin.state.requests[-1][1]
    assert sent["override_settings"]["sd_model_checkpoint"] == CHECKPOINTS[2].title
    assert sent["save_images"] is True
    assert task_id not in await queue_ids(daemon)
    assert task_id in (await history(daemon))[0]

    status, results = await call(daemon, "GET", f"/task/{task_id}/results")
    assert status == 200
    assert set(results) == {"success", "data"} and results["success"] is True
    native = await (await daemon.client.get(f"{API}/task/{task_id}/results")).json()
    assert len(results["data"]) == len(native["images"]) >= 2
    urls = orjson.loads(task["result"])["images"]
    assert len(urls) == len(results["data"])
    for url in urls:
        served = await daemon.client.get(url)
        assert served.status == 200, url
        assert (await served.read())[:8] == PNG_SIGNATURE
    prefix = "data:image/png;base64,"
    for entry, image in zip(results["data"], native["images"], strict=True):
        assert set(entry) == {"image", "infotext"}
        assert entry["image"].startswith(prefix)
        data = base64.b64decode(entry["image"][len(prefix) :], validate=True)
        assert png_size(data)[0] >= 640 and png_size(data)[1] >= 448
        assert isinstance(entry["infotext"], str)
        assert entry["infotext"].startswith(body["prompt"])
        assert entry["infotext"] == image["infotext"]
        # As the extension's results do: the infotext rides in the PNG too.
        assert png_texts(data).get("parameters") == entry["infotext"]

    response = await daemon.client.get(f"{AS}/task/{task_id}/results?zip=true")
    assert response.status == 200
    assert response.content_type == "application/zip"
    disposition = response.headers["Content-Disposition"].replace('"', "")
    assert disposition == f"attachment; filename=results-{task_id}.zip"
    with zipfile.ZipFile(io.BytesIO(await response.read())) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert len(names) == len(set(names)) == len(results["data"])
        for name in names:
            assert archive.read(name)[:8] == PNG_SIGNATURE


async def test_a_script_queues_img2img_and_params_leave_out_the_images(
    daemon: Daemon, standin: StandinHandle
) -> None:
    picture = base64.b64encode(tiny_png(16, 16, shade=40)).decode()
    mask = base64.b64encode(tiny_png(16, 16, shade=255)).decode()
    body = {
        "prompt": "a painted fox",
        "init_images": [picture],
        "mask": mask,
        "denoising_strength": 0.5,
        "width": 64,
        "height": 32,
    }
    task_id = await enqueue(daemon, body, kind="img2img")

    task = await poll_until(
        lambda: _status_in(daemon, task_id, FINISHED),
    )

    assert task["status"] == "done", task
    assert task["type"] == "img2img"
    assert task["params"]["denoising_strength"] == 0.5
    assert standin.state.requests[-1][0].endswith("/img2img")
    assert standin.state.requests[-1][1]["init_images"]
    status, results = await call(daemon, "GET", f"/task/{task_id}/results")
    assert status == 200 and results["success"] is True
    image = results["data"][0]["image"].split(",", 1)[1]
    assert png_size(base64.b64decode(image)) == (64, 32)
    assert results["data"][0]["infotext"].startswith("a painted fox")


async def _status_in(
    daemon: Daemon, task_id: str, statuses: set[str]
) -> dict[str, Any] | None:
    task = await get_task(daemon, task_id)
    return task if task["status"] in statuses else None


async def test_name_priority_vae_and_save_images_are_taken_at_enqueue(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await hold_running(daemon, standin, {"prompt": "running"})
    low = await enqueue(daemon, {"prompt": "low", "save_images": False})
    high = await enqueue(
        daemon,
        {
            "prompt": "high",
            "name": "urgent one",
            "priority": 5,
            "vae": "sdxl_vae.safetensors",
        },
    )

    task = await get_task(daemon, high)
    assert (task["name"], task["priority"]) == ("urgent one", 5)
    assert (await get_task(daemon, low))["priority"] == 0
    assert (await queue_ids(daemon))[1:] == [high, low]

    standin.state.release()
    await wait_for(daemon, low, "done")
    assert prompts_seen(standin) == ["running", "high", "low"]
    by_prompt = {body["prompt"]: body for _, body in standin.state.requests}
    assert by_prompt["high"]["override_settings"]["sd_vae"] == "sdxl_vae.safetensors"
    assert by_prompt["high"]["save_images"] is True
    assert by_prompt["low"]["save_images"] is False


async def test_bad_enqueue_bodies_get_422_in_the_fastapi_shape(
    daemon: Daemon, standin: StandinHandle
) -> None:
    typo = "sd_xl_base_2.0.safetensors"
    cases: list[tuple[dict[str, Any] | bytes, list[str] | None]] = [
        ({"prompt": "x", "steps": "many"}, ["body", "steps"]),
        ({"prompt": "x", "checkpoint": typo}, ["body", "checkpoint"]),
        (b"{not json", None),
        (b"[1, 2]", None),
    ]
    for payload, loc in cases:
        kw: dict[str, Any] = (
            {"data": payload} if isinstance(payload, bytes) else {"json": payload}
        )
        for kind in ("txt2img", "img2img"):
            status, body = await call(daemon, "POST", f"/queue/{kind}", **kw)
            assert status == 422, (kind, payload, body)
            check_422(body, loc)
            if loc == ["body", "checkpoint"]:
                # The close matches are listed, so a typo is easy to fix.
                assert "sd_xl_base_1.0" in orjson.dumps(body).decode()
    assert standin.state.generations_started == 0
    assert (await queue(daemon))["total_pending_tasks"] == 0


async def test_samplers_and_models_are_the_webuis(daemon: Daemon) -> None:
    status, samplers = await call(daemon, "GET", "/samplers")
    assert status == 200
    assert samplers == [sampler.name for sampler in SAMPLERS]

    status, models = await call(daemon, "GET", "/sd-models")
    assert status == 200
    assert models == [checkpoint.title for checkpoint in CHECKPOINTS]


# --- the queue ----------------------------------------------------------------------


async def test_the_queue_lists_the_running_task_first_and_pages(
    daemon: Daemon, standin: StandinHandle
) -> None:
    running = await hold_running(daemon, standin, {"prompt": "running"})
    waiting = [await enqueue(daemon, {"prompt": str(n)}) for n in range(4)]

    first = await queue(daemon)
    assert first["current_task_id"] == running
    assert first["paused"] is False
    assert first["total_pending_tasks"] == 5
    assert [t["id"] for t in first["pending_tasks"]] == [running, *waiting]
    assert first["pending_tasks"][0]["status"] == "running"
    assert first["pending_tasks"][0]["result"] is None

    page = await queue(daemon, "?limit=2&offset=1")
    assert [t["id"] for t in page["pending_tasks"]] == waiting[:2]
    assert [t["position"] for t in page["pending_tasks"]] == [1, 2]
    assert page["total_pending_tasks"] == 5
    assert len((await queue(daemon, "?limit=0"))["pending_tasks"]) == 5
    assert len((await queue(daemon, "?limit=3"))["pending_tasks"]) == 3

    assert (await get_task(daemon, running))["status"] == "running"
    # The same moments: epoch ms in the listing, ISO strings in GET /task/{id}.
    for listed in first["pending_tasks"]:
        alone = await get_task(daemon, listed["id"])
        for key in ("created_at", "updated_at"):
            seconds = _check_stamp(alone[key], "iso")
            assert abs(seconds * 1000 - listed[key]) <= 1, (key, alone, listed)
    for index, task_id in enumerate(waiting, start=1):
        assert (await get_task(daemon, task_id))["position"] == index
        status, body = await call(daemon, "GET", f"/task/{task_id}/position")
        assert status == 200
        assert body == {
            "success": True,
            "data": {"status": "pending", "position": index},
        }
    status, body = await call(daemon, "GET", f"/task/{running}/position")
    assert (status, body["success"], body["data"]["status"]) == (200, True, "running")

    standin.state.release()
    await wait_for(daemon, waiting[-1], "done")
    idle = await queue(daemon)
    assert (idle["current_task_id"], idle["pending_tasks"]) == (None, [])
    assert idle["total_pending_tasks"] == 0
    status, body = await call(daemon, "GET", f"/task/{running}/position")
    assert body == {"success": True, "data": {"status": "done", "position": None}}


async def test_moves_reorder_the_queue_and_the_order_it_runs_in(
    daemon: Daemon, standin: StandinHandle
) -> None:
    running = await hold_running(daemon, standin, {"prompt": "running"})
    a, b, c, d = [await enqueue(daemon, {"prompt": p}) for p in "abcd"]

    await succeeds(daemon, "POST", f"/task/{d}/move/top", "Task moved to top")
    assert await queue_ids(daemon) == [running, d, a, b, c]
    await succeeds(daemon, "POST", f"/task/{d}/move/bottom", "Task moved to bottom")
    assert await queue_ids(daemon) == [running, a, b, c, d]
    await succeeds(daemon, "POST", f"/task/{d}/move/{b}", "Task moved")
    assert await queue_ids(daemon) == [running, a, d, b, c]
    await succeeds(daemon, "POST", f"/task/{a}/move/{c}", "Task moved")
    assert await queue_ids(daemon) == [running, d, b, a, c]
    await succeeds(daemon, "POST", f"/move/{c}/top", "Task moved to top")
    assert await queue_ids(daemon) == [running, c, d, b, a]

    await refused(daemon, "POST", f"/task/{running}/move/top")
    assert await queue_ids(daemon) == [running, c, d, b, a]

    standin.state.release()
    await wait_for(daemon, a, "done")
    assert prompts_seen(standin) == ["running", "c", "d", "b", "a"]
    await refused(daemon, "POST", f"/task/{a}/move/top")


async def test_pause_holds_new_tasks_and_resume_runs_them(
    daemon: Daemon, standin: StandinHandle
) -> None:
    first = await hold_running(daemon, standin, {"prompt": "first"})

    await succeeds(daemon, "POST", "/queue/pause", "Queue paused.")
    assert (await queue(daemon))["paused"] is True
    second = await enqueue(daemon, {"prompt": "second"})
    standin.state.release()
    await wait_for(daemon, first, "done")
    # The next task would start in the same step that finished the first.
    assert (await get_task(daemon, second))["status"] == "pending"
    listing = await queue(daemon)
    assert (listing["current_task_id"], listing["total_pending_tasks"]) == (None, 1)
    assert standin.state.generations_started == 1

    await succeeds(daemon, "POST", "/queue/resume", "Queue resumed.")
    assert (await queue(daemon))["paused"] is False
    await wait_for(daemon, second, "done")

    await succeeds(daemon, "POST", "/pause", "Queue paused.")
    assert (await queue(daemon))["paused"] is True
    third = await enqueue(daemon, {"prompt": "third"})
    await succeeds(daemon, "POST", "/resume", "Queue resumed.")
    await wait_for(daemon, third, "done")
    assert prompts_seen(standin) == ["first", "second", "third"]


async def test_run_puts_a_pending_task_next_even_while_paused(
    daemon: Daemon, standin: StandinHandle
) -> None:
    running = await hold_running(daemon, standin, {"prompt": "running"})
    a, b, c = [await enqueue(daemon, {"prompt": p}) for p in "abc"]

    await succeeds(daemon, "POST", f"/task/{c}/run", "Task is scheduled to run next")
    assert await queue_ids(daemon) == [running, c, a, b]
    assert (await act(daemon, "POST", f"/task/{running}/run")) == {
        "success": False,
        "message": "Task is running",
    }

    await succeeds(daemon, "POST", "/queue/pause", "Queue paused.")
    await succeeds(daemon, "POST", f"/run/{b}", "Task is scheduled to run next")
    assert await queue_ids(daemon) == [running, b, c, a]
    standin.state.release()
    await wait_for(daemon, running, "done")
    assert (await get_task(daemon, b))["status"] == "pending"
    assert standin.state.generations_started == 1

    await succeeds(daemon, "POST", "/queue/resume", "Queue resumed.")
    await wait_for(daemon, a, "done")
    assert prompts_seen(standin) == ["running", "b", "c", "a"]
    message = await refused(daemon, "POST", f"/task/{a}/run")
    assert message.startswith("Task is done"), message


async def test_requeue_returns_the_new_task_which_runs_again(
    daemon: Daemon, standin: StandinHandle
) -> None:
    named = await enqueue(daemon, {"prompt": "again", "seed": 5, "name": "fox"})
    unnamed = await enqueue(daemon, {"prompt": "plain"})
    await wait_for(daemon, unnamed, "done")

    answer = await act(daemon, "POST", f"/task/{named}/requeue", "task_id")
    assert (answer["success"], answer["message"]) == (True, "Task requeued")
    copy = answer["task_id"]
    assert isinstance(copy, str) and copy != named
    assert copy in await queue_ids(daemon) or copy in (await history(daemon))[0]
    task = await wait_for(daemon, copy, "done")
    assert task["name"] == "Copy of fox"
    assert task["bookmarked"] is False
    assert task["params"]["seed"] == 5
    assert prompts_seen(standin) == ["again", "plain", "again"]

    answer = await act(daemon, "POST", f"/requeue/{unnamed}", "task_id")
    assert answer["success"] is True
    plain_copy = await wait_for(daemon, answer["task_id"], "done")
    assert plain_copy["params"]["prompt"] == "plain"

    standin.state.hold()
    pending = await enqueue(daemon)
    await refused(daemon, "POST", f"/task/{pending}/requeue")
    standin.state.release()


async def test_requeue_failed_queues_every_failed_task_once(
    daemon: Daemon, standin: StandinHandle
) -> None:
    assert await act(daemon, "POST", "/task/requeue-failed") == {
        "success": False,
        "message": "No failed tasks",
    }
    standin.state.fail_next(2)
    failed = [await enqueue(daemon, {"prompt": str(n)}) for n in range(2)]
    for task_id in failed:
        task = await wait_for(daemon, task_id, "failed")
        assert isinstance(task["result"], str) and task["result"]
    status, body = await call(daemon, "GET", f"/task/{failed[0]}/results")
    assert (status, body) == (200, {"success": False, "message": "Task is failed"})

    answer = await act(daemon, "POST", "/task/requeue-failed", "task_ids")
    assert (answer["success"], answer["message"]) == (True, "Requeued 2 failed tasks")
    assert len(set(answer["task_ids"])) == 2
    for task_id in answer["task_ids"]:
        await wait_for(daemon, task_id, "done")

    assert await act(daemon, "POST", "/task/requeue-failed") == {
        "success": False,
        "message": "No failed tasks",
    }


async def test_rename_takes_the_name_from_the_query(
    daemon: Daemon, standin: StandinHandle
) -> None:
    running = await hold_running(daemon, standin)
    pending = await enqueue(daemon)

    await succeeds(
        daemon, "POST", f"/task/{pending}/rename?name=sunset", "Task renamed."
    )
    assert (await get_task(daemon, pending))["name"] == "sunset"
    await succeeds(daemon, "POST", f"/rename/{running}?name=on%20it", "Task renamed.")
    assert (await get_task(daemon, running))["name"] == "on it"

    for path in [f"/task/{pending}/rename", f"/rename/{pending}"]:
        status, body = await call(daemon, "POST", path)
        assert status == 422, (path, body)
        check_422(body, ["query", "name"])
    assert (await get_task(daemon, pending))["name"] == "sunset"
    standin.state.release()


async def test_put_merges_params_without_a_checkpoint_and_refuses_started_tasks(
    daemon: Daemon, standin: StandinHandle
) -> None:
    running = await hold_running(daemon, standin, {"prompt": "running"})
    pending = await enqueue(daemon, {"prompt": "old", "steps": 2, "seed": 9})

    edit = {"name": "edited", "params": {"prompt": "new", "cfg_scale": 4.5}}
    status, body = await call(daemon, "PUT", f"/task/{pending}", json=edit)
    assert (status, body) == (200, {"success": True, "message": "Task updated."})
    task = await get_task(daemon, pending)
    assert task["name"] == "edited"
    assert (task["params"]["prompt"], task["params"]["cfg_scale"]) == ("new", 4.5)
    assert (task["params"]["steps"], task["params"]["seed"]) == (2, 9)

    status, body = await call(
        daemon, "PUT", f"/task/{pending}", json={"checkpoint": "sd_xl_base_1.0"}
    )
    assert (status, body["success"]) == (200, True), body
    assert "sd_xl_base_1.0" in (await get_task(daemon, pending))["params"]["checkpoint"]

    status, body = await call(
        daemon, "PUT", f"/task/{pending}", json={"params": {"steps": "many"}}
    )
    assert status == 422, body
    check_422(body)
    assert (await get_task(daemon, pending))["params"]["steps"] == 2

    status, body = await call(
        daemon, "PUT", f"/task/{running}", json={"params": {"prompt": "late"}}
    )
    assert status == 200 and check_action(body)["success"] is False, body

    standin.state.release()
    await wait_for(daemon, pending, "done")
    sent = standin.state.requests[-1][1]
    assert (sent["prompt"], sent["cfg_scale"], sent["seed"]) == ("new", 4.5, 9)
    assert sent["override_settings"]["sd_model_checkpoint"] == CHECKPOINTS[0].title
    assert standin.state.requests[0][1]["prompt"] == "running"

    status, body = await call(daemon, "PUT", f"/task/{pending}", json={"name": "kept"})
    assert (status, body) == (200, {"success": True, "message": "Task updated."})
    assert (await get_task(daemon, pending))["name"] == "kept"
    status, body = await call(
        daemon, "PUT", f"/task/{pending}", json={"checkpoint": "sd_xl_base_1.0"}
    )
    assert status == 200 and check_action(body)["success"] is False, body


async def test_bookmarked_tasks_survive_both_clears(
    daemon: Daemon, standin: StandinHandle
) -> None:
    kept_done, gone_done = await enqueue(daemon), await enqueue(daemon)
    await wait_for(daemon, gone_done, "done")
    running = await hold_running(daemon, standin)
    kept_pending, gone_pending = await enqueue(daemon), await enqueue(daemon)

    await succeeds(daemon, "POST", f"/task/{kept_done}/bookmark", "Task bookmarked")
    await succeeds(daemon, "POST", f"/bookmark/{kept_pending}", "Task bookmarked")
    assert (await get_task(daemon, kept_done))["bookmarked"] is True
    assert (await get_task(daemon, gone_done))["bookmarked"] is False
    assert await history(daemon, "?status=bookmarked") == ([kept_done], 1)

    await succeeds(daemon, "POST", "/queue/clear", "Queue cleared.")
    assert await queue_ids(daemon) == [running, kept_pending]
    status, body = await call(daemon, "GET", f"/task/{gone_pending}")
    assert status == 200
    assert body == {"success": False, "message": "Task not found"} or (
        body["data"]["status"] == "cancelled"
    ), body
    await succeeds(daemon, "POST", "/history/clear", "History cleared.")
    assert await history(daemon) == ([kept_done], 1)
    assert await queue_ids(daemon) == [running, kept_pending]

    standin.state.release()
    await wait_for(daemon, kept_pending, "done")
    assert (await get_task(daemon, running))["status"] == "done"
    await succeeds(daemon, "POST", f"/task/{kept_done}/unbookmark", "Task unbookmarked")
    await succeeds(daemon, "POST", f"/unbookmark/{kept_pending}", "Task unbookmarked")
    assert (await get_task(daemon, kept_pending))["bookmarked"] is False
    assert (await history(daemon, "?status=bookmarked")) == ([], 0)
    await succeeds(daemon, "POST", "/history/clear", "History cleared.")
    assert await history(daemon) == ([], 0)


async def test_delete_removes_pending_and_finished_tasks(
    daemon: Daemon, standin: StandinHandle
) -> None:
    finished = await enqueue(daemon)
    await wait_for(daemon, finished, "done")
    running = await hold_running(daemon, standin, {"prompt": "running"})
    pending = await enqueue(daemon, {"prompt": "pending"})
    other = await enqueue(daemon, {"prompt": "other"})

    await succeeds(daemon, "DELETE", f"/task/{pending}", "Task deleted")
    assert await queue_ids(daemon) == [running, other]
    status, body = await call(daemon, "GET", f"/task/{pending}")
    assert status == 200
    assert body == {"success": False, "message": "Task not found"} or (
        body["data"]["status"] == "cancelled"
    ), body

    standin.state.release()
    await wait_for(daemon, other, "done")
    assert pending not in (await history(daemon, "?limit=0"))[0]
    await succeeds(daemon, "POST", f"/delete/{finished}", "Task deleted")
    await not_found(daemon, finished)
    await succeeds(daemon, "DELETE", f"/task/{other}", "Task deleted")
    await not_found(daemon, other)
    assert await history(daemon) == ([running], 1)
    assert prompts_seen(standin) == ["a cat", "running", "other"]


async def test_delete_interrupts_the_running_task(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.hold(at_step=1)
    running = await enqueue(daemon, {"prompt": "running", "steps": 10})
    await standin.state.wait_held(1)
    after = await enqueue(daemon, {"prompt": "after"})

    response = await delete_while_held(daemon, standin, running, f"{AS}/task/{running}")
    assert response.status == 200
    assert await response.json() == {"success": True, "message": "Task interrupted"}
    # Answered once it ended, so that a script reading it next sees it stopped.
    assert (await get_task(daemon, running))["status"] == "interrupted"

    await daemon.wait_status(running, "interrupted")
    await daemon.wait_status(after, "done")
    status, body = await call(daemon, "GET", f"/task/{running}/results")
    assert (status, body) == (200, {"success": False, "message": "Task is interrupted"})
    # The reference's TaskModel: an interrupted task's result is null.
    task = await get_task(daemon, running)
    assert (task["status"], task["result"]) == ("interrupted", None)
    assert await history(daemon, "?status=interrupted") == ([running], 1)
    assert prompts_seen(standin) == ["running", "after"]


async def test_results_of_unfinished_tasks_say_their_status(
    daemon: Daemon, standin: StandinHandle
) -> None:
    running = await hold_running(daemon, standin)
    pending = await enqueue(daemon)

    for task_id, status_now in [(running, "running"), (pending, "pending")]:
        for path in [f"/task/{task_id}/results", f"/results/{task_id}"]:
            status, body = await call(daemon, "GET", path)
            assert status == 200
            assert body == {"success": False, "message": f"Task is {status_now}"}
        status, body = await call(daemon, "GET", f"/task/{task_id}/results?zip=true")
        assert (status, body["success"]) == (200, False)
    standin.state.release()

    await wait_for(daemon, pending, "done")
    status, body = await call(daemon, "GET", f"/results/{pending}")
    assert (status, body["success"], len(body["data"])) == (200, True, 1)


async def test_history_filters_by_status_counts_and_pages(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.fail_next(1)
    failed = await enqueue(daemon, {"prompt": "fails"})
    await wait_for(daemon, failed, "failed")
    done = [await enqueue(daemon, {"prompt": f"done {n}"}) for n in range(3)]
    await wait_for(daemon, done[-1], "done")
    running = await hold_running(daemon, standin)
    pending = await enqueue(daemon)
    newest_first = [*reversed(done), failed]

    assert await history(daemon) == (newest_first, 4)
    assert await history(daemon, "?status=all") == (newest_first, 4)
    assert await history(daemon, "?status=done") == (list(reversed(done)), 3)
    assert await history(daemon, "?status=failed") == ([failed], 1)
    assert await history(daemon, "?status=interrupted") == ([], 0)
    assert await history(daemon, "?status=pending") == ([pending], 1)
    assert await history(daemon, "?limit=2&offset=1") == (newest_first[1:3], 4)
    assert await history(daemon, "?limit=0") == (newest_first, 4)
    assert await history(daemon, "?limit=0&offset=2") == (newest_first[2:], 4)
    assert await history(daemon, "?status=bookmarked") == ([], 0)

    await succeeds(daemon, "POST", f"/task/{done[0]}/bookmark", "Task bookmarked")
    assert await history(daemon, "?status=bookmarked") == ([done[0]], 1)
    for task_id in done:
        await succeeds(daemon, "POST", f"/task/{task_id}/bookmark", "Task bookmarked")
    assert await history(daemon, "?status=bookmarked&limit=1") == ([done[-1]], 3)
    assert running not in (await history(daemon, "?limit=0"))[0]
    standin.state.release()


async def test_limit_zero_lists_more_than_a_default_page(
    daemon: Daemon, standin: StandinHandle
) -> None:
    ids = [await enqueue(daemon, {"prompt": str(n)}) for n in range(22)]
    await wait_for(daemon, ids[-1], "done")
    running = await hold_running(daemon, standin)
    waiting = [await enqueue(daemon) for _ in range(22)]

    assert len((await queue(daemon))["pending_tasks"]) == 20
    assert await queue_ids(daemon) == [running, *waiting]
    listed, total = await history(daemon)
    assert (len(listed), total) == (20, 22)
    assert await history(daemon, "?limit=0") == (list(reversed(ids)), 22)
    standin.state.release()


# --- ids nobody knows, aliases, both APIs, restarts -----------------------------------


async def test_every_route_with_an_id_answers_200_false_for_an_unknown_id(
    daemon: Daemon,
) -> None:
    await succeeds(daemon, "POST", "/queue/pause", "Queue paused.")
    known = await enqueue(daemon)
    nobody = str(uuid.uuid4())
    routes: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/task/{nobody}", {}),
        ("GET", f"/task/{nobody}/position", {}),
        ("PUT", f"/task/{nobody}", {"json": {"name": "x"}}),
        ("POST", f"/task/{nobody}/run", {}),
        ("POST", f"/task/{nobody}/requeue", {}),
        ("DELETE", f"/task/{nobody}", {}),
        ("POST", f"/task/{nobody}/move/top", {}),
        ("POST", f"/task/{nobody}/move/bottom", {}),
        ("POST", f"/task/{nobody}/move/{known}", {}),
        ("POST", f"/task/{known}/move/{nobody}", {}),
        ("POST", f"/task/{nobody}/bookmark", {}),
        ("POST", f"/task/{nobody}/unbookmark", {}),
        ("POST", f"/task/{nobody}/rename?name=x", {}),
        ("GET", f"/task/{nobody}/results", {}),
        ("GET", f"/task/{nobody}/results?zip=true", {}),
        ("POST", f"/run/{nobody}", {}),
        ("POST", f"/requeue/{nobody}", {}),
        ("POST", f"/delete/{nobody}", {}),
        ("POST", f"/move/{nobody}/top", {}),
        ("POST", f"/bookmark/{nobody}", {}),
        ("POST", f"/unbookmark/{nobody}", {}),
        ("POST", f"/rename/{nobody}?name=x", {}),
        ("GET", f"/results/{nobody}", {}),
        ("GET", "/task/not-even-a-uuid", {}),
    ]
    for method, path, kw in routes:
        status, body = await call(daemon, method, path, **kw)
        assert status == 200, (method, path, status, body)
        assert check_action(body) == {
            "success": False,
            "message": "Task not found",
        }, (method, path)
    assert await queue_ids(daemon) == [known]
    assert (await get_task(daemon, known))["name"] is None


async def test_a_task_queued_through_one_api_is_seen_through_the_other(
    daemon: Daemon, standin: StandinHandle, receiver: tuple[str, list[bytes]]
) -> None:
    hook_url, _ = receiver
    running = await hold_a_running_task(daemon, standin, {"prompt": "native"})
    from_as = await enqueue(
        daemon, {"prompt": "from as", "name": "as", "callback_url": hook_url}
    )
    from_native = await daemon.enqueue({"prompt": "native 2", "name": "nat"})

    native = await (await daemon.client.get(f"{API}/task/{from_as}")).json()
    assert (native["task_id"], native["name"], native["status"]) == (
        from_as,
        "as",
        "pending",
    )
    assert native["callback"]["url"] == hook_url
    assert native["callback"]["format"] == "agent-scheduler"
    task = await get_task(daemon, from_native)
    assert (task["name"], task["params"]["prompt"]) == ("nat", "native 2")
    assert task["api_task_callback"] is None
    assert await queue_ids(daemon) == [running, from_as, from_native]

    await succeeds(daemon, "POST", f"/task/{from_native}/bookmark", "Task bookmarked")
    view = await (await daemon.client.get(f"{API}/task/{from_native}")).json()
    assert view["bookmarked"] is True
    response = await daemon.client.patch(
        f"{API}/task/{from_as}", json={"bookmarked": True}
    )
    assert response.status == 200
    assert (await get_task(daemon, from_as))["bookmarked"] is True

    # Cancelled through the native API: shown, with inuqueue's own status.
    cancelled = await daemon.enqueue({"prompt": "cancelled"})
    response = await daemon.client.delete(f"{API}/task/{cancelled}")
    assert response.status == 200
    task = await get_task(daemon, cancelled)
    assert (task["status"], task["result"], task["position"]) == (
        "cancelled",
        None,
        None,
    )
    assert await history(daemon, "?status=cancelled") == ([cancelled], 1)
    assert cancelled not in (await history(daemon))[0]

    standin.state.release()
    await daemon.wait_status(from_native, "done")
    assert (await get_task(daemon, running))["status"] == "done"
    native_images = (await daemon.wait_status(from_as, "done"))["images"]
    as_images = orjson.loads((await get_task(daemon, from_as))["result"])["images"]
    assert len(as_images) == len(native_images)


async def test_tasks_and_bookmarks_survive_a_restart(
    daemon: Daemon, standin: StandinHandle
) -> None:
    done = await enqueue(daemon, {"prompt": "done", "name": "keeper"})
    await wait_for(daemon, done, "done")
    await succeeds(daemon, "POST", f"/task/{done}/bookmark", "Task bookmarked")
    await succeeds(daemon, "POST", "/queue/pause", "Queue paused.")
    a, b, c = [await enqueue(daemon, {"prompt": p}) for p in "abc"]
    await succeeds(daemon, "POST", f"/task/{c}/move/top", "Task moved to top")
    await succeeds(daemon, "POST", f"/task/{b}/bookmark", "Task bookmarked")
    before = {task_id: await get_task(daemon, task_id) for task_id in (done, a, b, c)}

    await daemon.restart()

    listing = await queue(daemon)
    assert listing["paused"] is True
    assert [t["id"] for t in listing["pending_tasks"]] == [c, a, b]
    for index, task_id in enumerate([c, a, b]):
        status, body = await call(daemon, "GET", f"/task/{task_id}/position")
        assert status == 200
        assert body == {
            "success": True,
            "data": {"status": "pending", "position": index},
        }
    assert await history(daemon, "?status=bookmarked") == ([done], 1)
    for task_id, seen in before.items():
        assert await get_task(daemon, task_id) == seen
    await succeeds(daemon, "POST", "/queue/clear", "Queue cleared.")
    assert await queue_ids(daemon) == [b]
    await succeeds(daemon, "POST", "/queue/resume", "Queue resumed.")
    await wait_for(daemon, b, "done")
    assert prompts_seen(standin) == ["done", "b"]


async def test_enqueue_with_a_callback_delivers_multipart_to_the_receiver(
    daemon: Daemon, receiver: tuple[str, list[bytes]]
) -> None:
    hook_url, bodies = receiver
    task_id = await enqueue(daemon, {"callback_url": hook_url})
    await wait_for(daemon, task_id, "done")

    async def delivered() -> bool:
        return bool(bodies)

    await poll_until(delivered, timeout_s=10)
    assert task_id.encode() in bodies[0]
    assert b'name="status"' in bodies[0] and b"done" in bodies[0]
    assert b'name="files"' in bodies[0] and PNG_SIGNATURE in bodies[0]


async def test_bad_fields_queries_and_edits_get_422_naming_the_field(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await succeeds(daemon, "POST", "/queue/pause", "Queue paused.")
    pending = await enqueue(daemon)
    cases: list[tuple[str, str, dict[str, Any], list[str]]] = [
        (
            "POST",
            "/queue/txt2img",
            {"json": {"priority": "high"}},
            ["body", "priority"],
        ),
        ("POST", "/queue/txt2img", {"json": {"name": 5}}, ["body", "name"]),
        (
            "POST",
            "/queue/txt2img",
            {"json": {"callback_url": "not a url"}},
            ["body", "callback_url"],
        ),
        ("GET", "/queue?limit=x", {}, ["query", "limit"]),
        ("GET", "/queue?offset=x", {}, ["query", "offset"]),
        ("GET", "/history?limit=x", {}, ["query", "limit"]),
        ("GET", "/history?offset=x", {}, ["query", "offset"]),
        ("PUT", f"/task/{pending}", {"json": {"name": 5}}, ["body", "name"]),
        (
            "PUT",
            f"/task/{pending}",
            {"json": {"checkpoint": "sd_xl_base_2.0.safetensors"}},
            ["body", "checkpoint"],
        ),
        ("PUT", f"/task/{pending}", {"data": b"{not json"}, ["body"]),
    ]
    for method, path, kw, loc in cases:
        status, body = await call(daemon, method, path, **kw)
        assert status == 422, (method, path, kw, body)
        check_422(body, loc)

    status, body = await call(daemon, "POST", "/queue/img2img", json={"prompt": "x"})
    assert status == 422, body
    check_422(body)
    assert await queue_ids(daemon) == [pending]
    task = await get_task(daemon, pending)
    assert (task["name"], task["params"]["checkpoint"]) == (None, None)


async def test_run_on_an_idle_queue_schedules_the_task_next(
    daemon: Daemon, standin: StandinHandle
) -> None:
    # The webui is gone: the task waits, pending, with nothing running.
    await standin.server.close()
    waiting = await enqueue(daemon, {"prompt": "first"})
    task_id = await enqueue(daemon, {"prompt": "second"})
    upstream = daemon.runtime.upstream

    async def stalled() -> bool:
        listing = await queue(daemon)
        return upstream.reachable is False and listing["current_task_id"] is None

    await poll_until(stalled, timeout_s=10)
    answer = await act(daemon, "POST", f"/task/{task_id}/run")
    assert await queue_ids(daemon) == [task_id, waiting]
    assert answer == {"success": True, "message": "Task is scheduled to run next"}


async def test_put_on_img2img_keeps_or_replaces_the_input_images(
    daemon: Daemon, standin: StandinHandle
) -> None:
    original, replacement = tiny_png(8, 8, shade=10), tiny_png(8, 8, shade=200)
    await succeeds(daemon, "POST", "/queue/pause", "Queue paused.")
    body = {"prompt": "keep", "init_images": [base64.b64encode(original).decode()]}
    kept = await enqueue(daemon, body, kind="img2img")
    replaced = await enqueue(daemon, {**body, "prompt": "swap"}, kind="img2img")

    # What a client read back (params without images) and sends again.
    params = {**(await get_task(daemon, kept))["params"], "init_images": None}
    status, answer = await call(
        daemon, "PUT", f"/task/{kept}", json={"params": {**params, "steps": 3}}
    )
    assert (status, answer) == (200, {"success": True, "message": "Task updated."})
    new_images = [base64.b64encode(replacement).decode()]
    status, answer = await call(
        daemon, "PUT", f"/task/{replaced}", json={"params": {"init_images": new_images}}
    )
    assert (status, answer) == (200, {"success": True, "message": "Task updated."})
    assert "init_images" not in (await get_task(daemon, replaced))["params"]

    await succeeds(daemon, "POST", "/queue/resume", "Queue resumed.")
    await wait_for(daemon, replaced, "done")
    sent = {body["prompt"]: body for _, body in standin.state.requests}
    assert sent["keep"]["steps"] == 3
    assert [base64.b64decode(i) for i in sent["keep"]["init_images"]] == [original]
    assert [base64.b64decode(i) for i in sent["swap"]["init_images"]] == [replacement]


async def test_history_clear_leaves_a_task_whose_callback_is_owed(
    daemon: Daemon, aiohttp_server: AiohttpServer
) -> None:
    tries: list[bytes] = []

    async def unavailable(request: web.Request) -> web.Response:
        tries.append(await request.read())
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/hook", unavailable)
    server = await aiohttp_server(app)
    owed = await enqueue(daemon, {"callback_url": str(server.make_url("/hook"))})
    plain = await enqueue(daemon)
    await wait_for(daemon, plain, "done")

    async def tried() -> bool:
        return bool(tries)

    await poll_until(tried, timeout_s=10)
    await succeeds(daemon, "POST", "/history/clear", "History cleared.")

    assert await history(daemon) == ([owed], 1)
    assert (await get_task(daemon, owed))["status"] == "done"
    await not_found(daemon, plain)


async def test_the_token_guards_these_routes_too(daemon: Daemon) -> None:
    await daemon.restart(token="s3cret")
    refused_answer = await daemon.client.post(
        f"{AS}/queue/txt2img", json={"prompt": "x"}
    )
    assert refused_answer.status == 401
    for path in ["/queue", "/history", "/samplers"]:
        assert (await daemon.client.get(AS + path)).status == 401, path

    auth = {"Authorization": "Bearer s3cret"}
    status, answer = await call(
        daemon, "POST", "/queue/txt2img", json={"prompt": "x"}, headers=auth
    )
    assert status == 200 and set(answer) == {"task_id"}
    status, body = await call(daemon, "GET", "/queue", headers=auth)
    assert status == 200
    assert answer["task_id"] in [t["id"] for t in check_queue(body)["pending_tasks"]]


async def test_a_repeated_idempotency_key_queues_one_task(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await succeeds(daemon, "POST", "/queue/pause", "Queue paused.")
    headers = {"Idempotency-Key": "script-run-1"}
    ids = []
    for _ in range(2):
        status, answer = await call(
            daemon, "POST", "/queue/txt2img", json={"prompt": "x"}, headers=headers
        )
        assert status == 200, answer
        ids.append(answer["task_id"])

    assert ids[0] == ids[1]
    assert await queue_ids(daemon) == ids[:1]


async def test_put_of_other_overrides_keeps_the_checkpoint_and_vae(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await succeeds(daemon, "POST", "/queue/pause", "Queue paused.")
    task_id = await enqueue(
        daemon, {"prompt": "refined", "checkpoint": "refiner", "vae": "Automatic"}
    )
    before = (await get_task(daemon, task_id))["params"]["checkpoint"]

    edit = {"params": {"override_settings": {"CLIP_stop_at_last_layers": 2}}}
    status, answer = await call(daemon, "PUT", f"/task/{task_id}", json=edit)
    assert (status, answer) == (200, {"success": True, "message": "Task updated."})
    await succeeds(daemon, "POST", "/queue/resume", "Queue resumed.")
    await wait_for(daemon, task_id, "done")

    assert before.startswith("sd_xl_refiner_1.0")
    assert (await get_task(daemon, task_id))["params"]["checkpoint"] == before
    (sent,) = [body for _, body in standin.state.requests]
    assert sent["override_settings"] == {
        "CLIP_stop_at_last_layers": 2,
        "sd_model_checkpoint": before,
        "sd_vae": "Automatic",
    }


async def test_several_init_images_set_the_batch_size_as_there(
    daemon: Daemon, standin: StandinHandle
) -> None:
    image = base64.b64encode(tiny_png(8, 8)).decode()
    task_id = await enqueue(
        daemon, {"init_images": [image, image, image]}, kind="img2img"
    )

    task = await wait_for(daemon, task_id, "done", "failed")

    assert task["status"] == "done", task["result"]
    assert task["params"]["batch_size"] == 3
    (sent,) = [body for _, body in standin.state.requests]
    assert (sent["batch_size"], len(sent["init_images"])) == (3, 3)


async def test_a_zip_flag_that_is_no_boolean_is_a_422(daemon: Daemon) -> None:
    task_id = await enqueue(daemon)
    await wait_for(daemon, task_id, "done")

    status, body = await call(daemon, "GET", f"/task/{task_id}/results?zip=maybe")

    assert status == 422
    check_422(body, ["query", "zip"])


async def test_put_of_several_init_images_sets_the_batch_size(
    daemon: Daemon, standin: StandinHandle
) -> None:
    image = base64.b64encode(tiny_png(8, 8)).decode()
    await succeeds(daemon, "POST", "/queue/pause", "Queue paused.")
    task_id = await enqueue(daemon, {"init_images": [image]}, kind="img2img")

    edit = {"params": {"init_images": [image, image]}}
    status, answer = await call(daemon, "PUT", f"/task/{task_id}", json=edit)
    assert (status, answer) == (200, {"success": True, "message": "Task updated."})
    await succeeds(daemon, "POST", "/queue/resume", "Queue resumed.")
    task = await wait_for(daemon, task_id, "done", "failed")

    assert task["status"] == "done", task["result"]
    (sent,) = [body for _, body in standin.state.requests]
    assert (sent["batch_size"], len(sent["init_images"])) == (2, 2)
