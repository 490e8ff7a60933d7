"""`inuqueue demo`: the stand-in webui and the daemon doing real work, with a crash.

It queues a handful of realistic requests (one through the Agent Scheduler API),
each with a callback to a small receiver in this process, watches them run, kills the
daemon with no warning part-way, starts it again on the same data directory and waits
until the queue is empty. It succeeds only if every task ends done with its images on
disk and every callback arrived with a valid signature.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from inuqueue.standin.images import make_png
from inuqueue.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

API = "/inuqueue/v1"
AGENT_SCHEDULER_API = "/agent-scheduler/v1"
# Generous bounds: the demo's whole queue takes some 15 s of simulated work.
START_TIMEOUT_S = 30.0
FINISH_TIMEOUT_S = 180.0
POLL_INTERVAL_S = 0.25
STANDIN_STEP_MS = 40

REQUESTS: list[tuple[str, dict[str, Any]]] = [
    (
        "txt2img",
        {
            "name": "lighthouse",
            "prompt": "a lighthouse on a cliff at dusk, oil painting",
            "negative_prompt": "blurry, lowres",
            "steps": 25,
            "cfg_scale": 6.5,
            "width": 768,
            "height": 512,
            "batch_size": 2,
            "n_iter": 2,
            "sampler_name": "DPM++ 2M",
            "scheduler": "karras",
            "seed": -1,
        },
    ),
    (
        "txt2img",
        {
            "name": "squirrel",
            "prompt": "cute squirrel",
            "negative_prompt": "ugly, out of frame",
            "styles": ["anime"],
            "seed": 1003,
            "steps": 20,
            "cfg_scale": 7,
            "sampler_name": "Euler a",
            "scheduler": "automatic",
        },
    ),
    (
        "txt2img",
        {
            "name": "portrait, high priority",
            "priority": 10,
            "prompt": "portrait of an old fisherman, detailed, 85mm",
            "steps": 30,
            "width": 512,
            "height": 768,
            "seed": 42,
        },
    ),
    (
        "agent-scheduler txt2img",
        {
            "name": "city at night",
            "prompt": "a neon city at night, rain, cinematic",
            "steps": 20,
            "batch_size": 3,
            "seed": 7,
        },
    ),
    (
        "img2img",
        {
            "name": "repaint",
            "prompt": "the same scene as a watercolour",
            "steps": 20,
            "denoising_strength": 0.6,
            "width": 512,
            "height": 512,
            "seed": 99,
        },
    ),
]


class DemoFailed(Exception):
    """The demo could not show what it should."""


class Receiver:
    """A callback receiver on loopback that checks each delivery's signature.

    It answers the very first delivery with 503, so that the demo shows a retry.
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.url = ""
        # task id -> (deliveries received, every one signed correctly)
        self.received: dict[str, tuple[int, bool]] = {}
        self.refused_once = False
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self.url

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.refused_once:
            self.refused_once = True
            return web.Response(status=503)
        stamp = request.headers.get(TIMESTAMP_HEADER, "0")
        expected = sign(self.secret, int(stamp), body)
        valid = request.headers.get(SIGNATURE_HEADER) == expected
        task_id = request.headers.get("X-Inuqueue-Task-Id", "")
        count, all_valid = self.received.get(task_id, (0, True))
        self.received[task_id] = (count + 1, all_valid and valid)
        return web.Response(status=204)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Process:
    """A child `python -m inuqueue …` whose log goes to a file."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self._log_task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Start it and return the URL it says it listens on."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "inuqueue",
            *self.args,
            "--log-format",
            "json",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        with self.log_path.open("ab") as log_file:
            while time.monotonic() < deadline:
                line = await asyncio.wait_for(
                    self.proc.stderr.readline(), deadline - time.monotonic()
                )
                if not line:
                    break
                log_file.write(line)
                entry = _json_line(line)
                if entry.get("event") == "listening":
                    self.url = str(entry["url"])
                    self._log_task = asyncio.create_task(
                        self._copy_log(self.proc.stderr)
                    )
                    return self.url
        raise DemoFailed(f"{self.name} did not start; see {self.log_path}")

    async def _copy_log(self, stream: asyncio.StreamReader) -> None:
        with self.log_path.open("ab") as log_file:
            while line := await stream.readline():
                log_file.write(line)
                log_file.flush()

    def kill(self) -> None:
        """Kill it without warning (SIGKILL; TerminateProcess on Windows)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def stop(self) -> None:
        """Ask it to stop and wait."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def _json_line(line: bytes) -> dict[str, Any]:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {}
    return entry if isinstance(entry, dict) else {}


def say(text: str) -> None:
    """Print a line of the demo's narration."""
    print(text, flush=True)


async def run_demo(data_root: Path, step_ms: float = STANDIN_STEP_MS) -> int:
    """Run the whole demo; 0 only if every task finished with its images."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    work = (data_root / f"demo-{stamp}").resolve()
    data_dir = work / "data"
    work.mkdir(parents=True, exist_ok=True)
    standin = Process(
        "stand-in webui",
        ["standin", "--port", "0", "--step-ms", str(step_ms)],
        work / "standin.log",
    )
    secret = secrets.token_hex(16)
    receiver = Receiver(secret)
    daemon_args = ["serve", "--port", "0", "--data", str(data_dir)]
    daemon_args += ["--webhook-secret", secret]
    daemons: list[Process] = []
    try:
        upstream = await standin.start()
        say(f"stand-in webui listening on {upstream}")
        say(f"callback receiver listening on {await receiver.start()}")
        daemon_args += ["--upstream", upstream]
        async with aiohttp.ClientSession() as http:
            return await _scenario(http, daemon_args, daemons, work, receiver)
    except DemoFailed as exc:
        say(f"demo FAILED: {exc}")
        return 1
    finally:
        for daemon in daemons:
            await daemon.stop()
        await standin.stop()
        await receiver.stop()


async def _scenario(
    http: aiohttp.ClientSession,
    daemon_args: list[str],
    daemons: list[Process],
    work: Path,
    receiver: Receiver,
) -> int:
    first = Process("daemon", daemon_args, work / "daemon.log")
    daemons.append(first)
    url = await first.start()
    say(f"inuqueue listening on {url}, data in {work / 'data'}")

    teapot = await http.get(url + "/sdapi/v1/sd-models")
    say(
        f"GET /sdapi/v1/sd-models through inuqueue -> {teapot.status} "
        f"(webui said {teapot.headers.get('X-Upstream-Status')}): "
        f"{len(await teapot.json(content_type=None))} models"
    )

    task_ids = await _enqueue_all(http, url, receiver.url)
    statuses = await _watch(http, url, task_ids, until_done=2)

    running = "while a task runs" if "running" in statuses else "between two tasks"
    say(f"killing the daemon with no warning (SIGKILL) {running} ...")
    first.kill()
    if first.proc is not None:
        await first.proc.wait()

    second = Process("daemon", daemon_args, work / "daemon.log")
    daemons.append(second)
    url = await second.start()
    say(f"inuqueue restarted on {url}; the journal was replayed")
    await _watch(http, url, task_ids, until_done=len(task_ids))
    complete = await _report(http, url, task_ids, work / "data")
    delivered = await _callbacks(http, url, task_ids, receiver)
    ok = complete and delivered
    say("")
    say(
        "demo OK: every task done, images on disk, every callback signed and received"
        if ok
        else "demo FAILED"
    )
    return 0 if ok else 1


async def _enqueue_all(
    http: aiohttp.ClientSession, url: str, callback_url: str
) -> list[str]:
    init_png = make_png(2024, 512, 512)
    task_ids = []
    for kind, body in REQUESTS:
        body = {**body, "callback_url": callback_url}
        if kind == "img2img":
            body["init_images"] = [base64.b64encode(init_png).decode()]
        api, _, route = kind.rpartition(" ")
        prefix = AGENT_SCHEDULER_API if api == "agent-scheduler" else API
        async with http.post(f"{url}{prefix}/queue/{route}", json=body) as response:
            answer = await response.json()
            if response.status not in (200, 202):
                raise DemoFailed(f"enqueue answered {response.status}: {answer}")
        task_ids.append(answer["task_id"])
        say(f"queued {kind} {body['name']!r} -> {answer['task_id']}")
    return task_ids


async def _watch(
    http: aiohttp.ClientSession, url: str, task_ids: list[str], until_done: int
) -> list[str]:
    """Print how the queue moves until `until_done` tasks are done."""
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    last_line = ""
    while time.monotonic() < deadline:
        statuses = [(await _task(http, url, t))["status"] for t in task_ids]
        async with http.get(url + "/sdapi/v1/progress") as response:
            progress = await response.json(content_type=None)
        line = (
            f"  {statuses.count('done')} done, {statuses.count('running')} running, "
            f"{statuses.count('pending')} pending; webui at "
            f"{float(progress.get('progress', 0.0)):.0%}"
        )
        if line != last_line:
            say(line)
            last_line = line
        failed = [t for t, s in zip(task_ids, statuses, strict=True) if s == "failed"]
        if failed:
            raise DemoFailed(f"tasks failed: {failed}")
        if statuses.count("done") >= until_done:
            return statuses
        await asyncio.sleep(POLL_INTERVAL_S)
    raise DemoFailed(f"the queue did not finish within {FINISH_TIMEOUT_S:.0f} s")


async def _task(http: aiohttp.ClientSession, url: str, task_id: str) -> Any:
    async with http.get(f"{url}{API}/task/{task_id}") as response:
        return await response.json()


async def _report(
    http: aiohttp.ClientSession, url: str, task_ids: list[str], data_dir: Path
) -> bool:
    say("")
    say("every task:")
    complete = True
    for task_id in task_ids:
        task = await _task(http, url, task_id)
        say(
            f"- {task['name']!r} {task['status']} after {task['attempts']} "
            f"attempt(s), {len(task['images'])} image(s)"
        )
        for image in task["images"]:
            path = data_dir / "images" / image["digest"][:2] / image["digest"][2:4]
            path = path / image["digest"]
            on_disk = path.is_file() and path.stat().st_size == image["bytes"]
            complete = complete and on_disk
            say(f"    {url}{image['url']}")
            say(f"    {path}{'' if on_disk else '  (MISSING)'}")
        complete = complete and task["status"] == "done" and bool(task["images"])
    return complete


async def _callbacks(
    http: aiohttp.ClientSession, url: str, task_ids: list[str], receiver: Receiver
) -> bool:
    """Wait (bounded) until every task's callback is delivered; report each."""
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while time.monotonic() < deadline:
        tasks = [await _task(http, url, task_id) for task_id in task_ids]
        if all(t["callback"]["delivery"] != "pending" for t in tasks):
            break
        await asyncio.sleep(POLL_INTERVAL_S)
    say("")
    say("callbacks:")
    every = True
    for task in tasks:
        callback = task["callback"]
        count, valid = receiver.received.get(task["task_id"], (0, False))
        codes = [attempt["status_code"] for attempt in callback["attempts"]]
        say(
            f"- {task['name']!r}: {callback['delivery']} after {callback['tries']} "
            f"tr{'y' if callback['tries'] == 1 else 'ies'} (answers {codes}), "
            f"{count} received, signature {'valid' if valid else 'INVALID'}"
        )
        every = every and callback["delivery"] == "delivered" and count > 0 and valid
    return every
