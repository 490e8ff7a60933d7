"""The dispatch gap: from the stand-in sending task N's answer to task N+1 arriving.

The stand-in runs with zero work per step and a timing middleware around it
(`bench.serve.marks_middleware`); the gaps are taken on its clock alone. The
baseline is the same loop driven by a minimal client: POST, read the answer, POST.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson

from bench.common import Figure, percentile, say
from bench.httpclient import Connection, build_request, request
from bench.procs import Server
from bench.serve import MARKS_PATH

TASKS = 200
WAIT_S = 120.0
POLL_S = 0.05
# Zero work: one step of a small picture, on a stand-in with step_ms=0.
REQUEST: dict[str, Any] = {
    "prompt": "zero work",
    "steps": 1,
    "width": 64,
    "height": 64,
    "seed": -1,
}


async def _marks(standin: Server) -> tuple[list[float], list[float]]:
    answer = await request(standin.port, "GET", MARKS_PATH)
    data = orjson.loads(answer.body)
    return list(data["received"]), list(data["sent"])


def _gaps(received: list[float], sent: list[float]) -> list[float]:
    gaps = [received[i + 1] - sent[i] for i in range(min(len(sent), len(received) - 1))]
    if any(gap < 0 for gap in gaps):
        raise RuntimeError("a request arrived before the answer before it was sent")
    return gaps


async def _baseline(standin: Server) -> list[float]:
    await request(standin.port, "DELETE", MARKS_PATH)
    conn = await Connection.open(standin.port)
    try:
        for _ in range(TASKS):
            body = {**REQUEST, "force_task_id": str(uuid.uuid4()), "send_images": True}
            raw = build_request(
                "POST", "/sdapi/v1/txt2img", standin.port, orjson.dumps(body)
            )
            answer = await conn.send(raw)
            if answer.status != 200:
                raise RuntimeError(f"the stand-in answered {answer.status}")
    finally:
        await conn.close()
    return _gaps(*await _marks(standin))


async def _through_daemon(standin: Server, daemon: Server) -> list[float]:
    api = "/inuqueue/v1"
    answer = await request(daemon.port, "POST", f"{api}/queue/pause")
    if answer.status != 200:
        raise RuntimeError(f"pause answered {answer.status}: {answer.body[:200]!r}")
    body = orjson.dumps(REQUEST)
    conn = await Connection.open(daemon.port)
    try:
        raw = build_request("POST", f"{api}/queue/txt2img", daemon.port, body)
        for _ in range(TASKS):
            answer = await conn.send(raw)
            if answer.status != 202:
                raise RuntimeError(f"enqueue answered {answer.status}")
    finally:
        await conn.close()
    await request(standin.port, "DELETE", MARKS_PATH)
    await request(daemon.port, "POST", f"{api}/queue/resume")
    deadline = time.monotonic() + WAIT_S
    while True:
        received, sent = await _marks(standin)
        if len(sent) >= TASKS:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(sent)} of {TASKS} tasks ran in {WAIT_S} s")
        await asyncio.sleep(POLL_S)
    return _gaps(received, sent)


async def measure(standin: Server, daemon: Server) -> Figure:
    """The gap through the daemon against a minimal client's."""
    say("dispatch gap: minimal client")
    baseline_gaps = await _baseline(standin)
    say("dispatch gap: through the daemon")
    gaps = await _through_daemon(standin, daemon)
    p50, p99 = percentile(gaps, 50), percentile(gaps, 99)
    base_p50 = percentile(baseline_gaps, 50)
    return Figure(
        name=f"dispatch gap, {TASKS} zero-work tasks",
        value=p50,
        baseline=base_p50,
        unit="s",
        sense="max",
        target=0.0,
        shown_value=f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms",
        shown_baseline=f"p50 {base_p50 * 1000:.2f} ms (minimal client)",
        target_text="p50<=2ms p99<=10ms",
        passed_override=p50 <= 0.002 and p99 <= 0.010,
        details={
            "p99_s": p99,
            "max_s": max(gaps),
            "baseline_p99_s": percentile(baseline_gaps, 99),
            "gaps": len(gaps),
        },
    )
