"""The queue and history pages: does a page cost more when the daemon knows more?

Both sides ask for the same page size (``limit=10``), so that the answer has the
same shape and only the number of tasks behind it differs. The default page (50)
is measured too and kept in the details.
"""

from __future__ import annotations

from bench.common import Figure, percentile, say
from bench.httpclient import build_request, sequential
from bench.procs import Server

WARMUP = 10
REQUESTS = 60
ROUNDS = 6
PAGE = 10


async def _p50s(server: Server, path: str) -> list[float]:
    raw = build_request("GET", path, server.port)
    return await sequential(server.port, raw, count=REQUESTS, warmup=WARMUP, expect=200)


async def measure_page(
    route: str, big: Server, small: Server, big_tasks: int, small_tasks: int
) -> Figure:
    """p50 of GET `route` with `big_tasks` behind it against `small_tasks`."""
    path = f"/inuqueue/v1/{route}?limit={PAGE}"
    default_path = f"/inuqueue/v1/{route}"
    big_lat: list[float] = []
    small_lat: list[float] = []
    for round_no in range(ROUNDS):
        say(f"{route} page, round {round_no + 1} of {ROUNDS}")
        turns = [(small, small_lat), (big, big_lat)]
        for server, into in turns if round_no % 2 == 0 else turns[::-1]:
            into += await _p50s(server, path)
    big_default = percentile(await _p50s(big, default_path), 50)
    small_default = percentile(await _p50s(small, default_path), 50)
    value, baseline = percentile(big_lat, 50), percentile(small_lat, 50)
    return Figure(
        name=f"GET /{route} p50, {big_tasks:,} tasks",
        value=value,
        baseline=baseline,
        unit="s",
        sense="max",
        target=2.0,
        shown_value=f"{value * 1000:.2f} ms",
        shown_baseline=f"{baseline * 1000:.2f} ms ({small_tasks} tasks)",
        target_text="<= 2x",
        details={
            "limit": PAGE,
            "p99_s": percentile(big_lat, 99),
            "baseline_p99_s": percentile(small_lat, 99),
            "default_limit_p50_s": big_default,
            "default_limit_baseline_p50_s": small_default,
        },
    )
