"""The teapot proxy: what forwarding `GET /sdapi/v1/sd-models` adds.

Latency: one request at a time, proxied and straight to the stand-in. Throughput:
many clients at once. The proxied request answers 418 (the teapot, on by default).
"""

from __future__ import annotations

import statistics

from bench.common import Figure, percentile, say
from bench.httpclient import build_request, closed_loop, sequential
from bench.procs import Server

PATH = "/sdapi/v1/sd-models"
WARMUP = 50
REQUESTS = 300
ROUNDS = 3
CLIENTS = 16
LOAD_REQUESTS = 1500
LOAD_MAX_S = 20.0


async def measure(daemon: Server, standin: Server) -> list[Figure]:
    """Added p50 latency and the throughput ratio of the proxied request."""
    direct_raw = build_request("GET", PATH, standin.port)
    proxied_raw = build_request("GET", PATH, daemon.port)
    direct_lat: list[float] = []
    proxied_lat: list[float] = []
    direct_rates: list[float] = []
    proxied_rates: list[float] = []
    daemon_cpu: list[float] = []
    for round_no in range(ROUNDS):
        say(f"proxy, round {round_no + 1} of {ROUNDS}")
        direct_lat += await sequential(
            standin.port, direct_raw, count=REQUESTS, warmup=WARMUP, expect=200
        )
        proxied_lat += await sequential(
            daemon.port, proxied_raw, count=REQUESTS, warmup=WARMUP, expect=418
        )
        for port, raw, expect, into in (
            (standin.port, direct_raw, 200, direct_rates),
            (daemon.port, proxied_raw, 418, proxied_rates),
        ):
            cpu_before = daemon.cpu_seconds()
            result = await closed_loop(
                port,
                raw,
                concurrency=CLIENTS,
                total=LOAD_REQUESTS,
                max_seconds=LOAD_MAX_S,
                expect=expect,
            )
            if result.bad_status:
                raise RuntimeError(f"{result.bad_status} answers were not {expect}")
            into.append(result.rate)
            if into is proxied_rates:
                cpu = daemon.cpu_seconds() - cpu_before
                daemon_cpu.append(cpu / result.completed)

    direct_p50, proxied_p50 = percentile(direct_lat, 50), percentile(proxied_lat, 50)
    added = proxied_p50 - direct_p50
    latency = Figure(
        name="proxy: added p50 latency",
        value=proxied_p50,
        baseline=direct_p50,
        unit="s",
        sense="max",
        target=0.0,
        shown_value=f"{proxied_p50 * 1000:.2f} ms (+{added * 1000:.2f} ms)",
        shown_baseline=f"{direct_p50 * 1000:.2f} ms (direct)",
        target_text="<= +1 ms",
        passed_override=added <= 0.001,
        details={
            "added_p50_s": added,
            "p99_s": percentile(proxied_lat, 99),
            "baseline_p99_s": percentile(direct_lat, 99),
        },
    )
    value = statistics.median(proxied_rates)
    baseline = statistics.median(direct_rates)
    throughput = Figure(
        name="proxy: throughput",
        value=value,
        baseline=baseline,
        unit="req/s",
        sense="min",
        target=0.4,
        shown_value=f"{value:,.0f} req/s",
        shown_baseline=f"{baseline:,.0f} req/s (direct)",
        target_text=">= 0.4x",
        details={
            "clients": CLIENTS,
            "proxied_rates": proxied_rates,
            "direct_rates": direct_rates,
            "daemon_cpu_us_per_request": statistics.median(daemon_cpu) * 1e6,
        },
    )
    return [latency, throughput]
