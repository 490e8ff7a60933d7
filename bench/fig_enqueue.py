"""Durable enqueue: the rate under many clients, and the latency as the queue grows.

Both daemons are paused (their journal says so), so the consumer never runs: what
is measured is the enqueue path alone, fsync on, with its group commit.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import orjson

from bench.common import Figure, percentile, say
from bench.httpclient import build_request, closed_loop, sequential
from bench.journals import ENQUEUE_BODY
from bench.procs import Server
from inuqueue.config import Config

PATH = "/inuqueue/v1/queue/txt2img"
CLIENTS = 64
RATE_WARMUP = 300
RATE_REQUESTS = 2000
RATE_MAX_S = 15.0
# Short rounds, the two servers taking turns: the machine's other load drifts,
# and the medians of interleaved rounds follow it on both sides alike.
RATE_ROUNDS = 4
LATENCY_WARMUP = 10
LATENCY_REQUESTS = 60
LATENCY_ROUNDS = 6
# A journal past this size is compacted by the daemon on its first write.
COMPACT_WAIT_S = 60.0


def enqueue_request(port: int) -> bytes:
    """The POST of one realistic txt2img task."""
    return build_request("POST", PATH, port, orjson.dumps(ENQUEUE_BODY))


async def _rate(server: Server, expect: int) -> tuple[float, float]:
    """Requests per second, and the server's CPU time per request."""
    raw = enqueue_request(server.port)
    await closed_loop(
        server.port,
        raw,
        concurrency=CLIENTS,
        total=RATE_WARMUP,
        max_seconds=5,
        expect=expect,
    )
    cpu_before = server.cpu_seconds()
    result = await closed_loop(
        server.port,
        raw,
        concurrency=CLIENTS,
        total=RATE_REQUESTS,
        max_seconds=RATE_MAX_S,
        expect=expect,
    )
    if result.bad_status:
        raise RuntimeError(
            f"{server.name}: {result.bad_status} answers were not {expect}"
        )
    return result.rate, (server.cpu_seconds() - cpu_before) / result.completed


async def measure_rate(bare: Server, daemon: Server) -> Figure:
    """Durable enqueues per second against a bare 202 handler, same client."""
    bare_rates, daemon_rates, daemon_cpu, bare_cpu = [], [], [], []
    for round_no in range(RATE_ROUNDS):
        say(f"enqueue rate, round {round_no + 1} of {RATE_ROUNDS}")
        rate, cpu = await _rate(bare, 202)
        bare_rates.append(rate)
        bare_cpu.append(cpu)
        rate, cpu = await _rate(daemon, 202)
        daemon_rates.append(rate)
        daemon_cpu.append(cpu)
    value = statistics.median(daemon_rates)
    baseline = statistics.median(bare_rates)
    return Figure(
        name="durable enqueue rate",
        value=value,
        baseline=baseline,
        unit="req/s",
        sense="min",
        target=0.5,
        shown_value=f"{value:,.0f} req/s",
        shown_baseline=f"{baseline:,.0f} req/s (bare 202)",
        target_text=">= 0.5x",
        details={
            "clients": CLIENTS,
            "requests_per_round": RATE_REQUESTS,
            "daemon_rates": daemon_rates,
            "bare_rates": bare_rates,
            # Server CPU (all threads, user + system) per request, median of rounds.
            "daemon_cpu_us_per_request": statistics.median(daemon_cpu) * 1e6,
            "bare_cpu_us_per_request": statistics.median(bare_cpu) * 1e6,
            "fsync": True,
        },
    )


async def settle(server: Server, journal_bytes: int) -> None:
    """Send one enqueue and, if that makes the daemon compact, wait until it did.

    The daemon compacts a journal past `Config.compact_bytes` after its first
    write; that is a one-off of start-up, not what the queue's size costs later.
    """
    threshold = getattr(Config(), "compact_bytes", 0)
    await sequential(
        server.port, enqueue_request(server.port), count=1, warmup=0, expect=202
    )
    if not threshold or journal_bytes < threshold:
        return
    deadline = time.monotonic() + COMPACT_WAIT_S
    while server.log_count("journal.compacted") == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not compact in {COMPACT_WAIT_S} s")
        await asyncio.sleep(0.1)


async def measure_latency(
    empty: Server, full: Server, pending: int, journal_bytes: int
) -> Figure:
    """p50 of one enqueue at a time with `pending` tasks queued, and with none.

    Short rounds, taking turns and swapping who goes first, so that the
    machine's other load falls on both sides alike.
    """
    await settle(full, journal_bytes)
    empty_lat: list[float] = []
    full_lat: list[float] = []
    for round_no in range(LATENCY_ROUNDS):
        say(f"enqueue latency, round {round_no + 1} of {LATENCY_ROUNDS}")
        turns = [(empty, empty_lat), (full, full_lat)]
        for server, into in turns if round_no % 2 == 0 else turns[::-1]:
            into += await sequential(
                server.port,
                enqueue_request(server.port),
                count=LATENCY_REQUESTS,
                warmup=LATENCY_WARMUP,
                expect=202,
            )
    value, baseline = percentile(full_lat, 50), percentile(empty_lat, 50)
    return Figure(
        name=f"enqueue p50, {pending:,} pending",
        value=value,
        baseline=baseline,
        unit="s",
        sense="max",
        target=1.2,
        shown_value=f"{value * 1000:.2f} ms",
        shown_baseline=f"{baseline * 1000:.2f} ms (empty queue)",
        target_text="<= 1.2x",
        details={
            "requests": len(full_lat),
            "p99_s": percentile(full_lat, 99),
            "baseline_p99_s": percentile(empty_lat, 99),
            "pending_at_start": pending,
            # Before the measurement, after the first write (see `settle`).
            "compactions": full.log_count("journal.compacted"),
        },
    )
