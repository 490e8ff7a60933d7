"""The whole run: fixtures, servers, every figure, one table, one JSON file."""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import (
    fig_dispatch,
    fig_enqueue,
    fig_ingest,
    fig_pages,
    fig_proxy,
    fig_replay,
)
from bench.common import OUT_DIR, Figure, failed_figure, say
from bench.context import Context
from bench.journals import write_history, write_pending, write_small
from inuqueue.journal import JOURNAL_NAME

BIG_TASKS = 100_000
SMALL_TASKS = 10


def _disk(path: Path) -> dict[str, Any]:
    """The block device and file system under `path`, as far as Linux tells."""
    dev = os.stat(path).st_dev
    disk: dict[str, Any] = {}
    sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if sys_dev.exists():
        block = sys_dev.resolve()
        # A partition's queue/ and device/ are its disk's.
        if not (block / "queue").exists():
            block = block.parent
        disk["device"] = block.name
        rotational = block / "queue" / "rotational"
        if rotational.exists():
            disk["rotational"] = rotational.read_text().strip() == "1"
        driver = block / "device" / "driver"
        if driver.exists():
            disk["driver"] = driver.resolve().name
    best = ""
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if str(path).startswith(parts[1]) and len(parts[1]) >= len(best):
            best = parts[1]
            disk["fs"] = parts[2]
    return disk


def fdatasync_p50(path: Path, count: int = 50) -> float:
    """The median time of appending a journal-sized line and fdatasync-ing it."""
    probe = path / "fsync-probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * 300 + b"\n")
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        probe.unlink()
    return sorted(times)[count // 2]


def machine(scratch: Path) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "disk": _disk(scratch),
        "fdatasync_p50_s": fdatasync_p50(scratch),
        "loadavg_at_start": os.getloadavg(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return info


def _cell(figure: Figure) -> list[str]:
    if figure.error is not None:
        return [figure.name, "error", "-", "-", figure.target_text, "ERROR"]
    ratio = "inf" if math.isinf(figure.ratio) else f"{figure.ratio:.2f}x"
    result = "pass" if figure.passed else "SHORT"
    return [
        figure.name,
        figure.shown_value,
        figure.shown_baseline,
        ratio,
        figure.target_text,
        result,
    ]


def table(figures: list[Figure]) -> str:
    """The one table: figure, value, baseline, ratio, target, pass or short."""
    head = ["figure", "measured", "baseline (same run)", "ratio", "target", "result"]
    rows = [head, *(_cell(figure) for figure in figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]

    def line(row: list[str]) -> str:
        return (
            "| "
            + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
            + " |"
        )

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), rule, *(line(row) for row in rows[1:])])


async def _guarded(
    figures: list[Figure], name: str, measure: Callable[[], Awaitable[Any]]
) -> None:
    """Run one measurement; a failure becomes an error row, not the end of the run.

    The row and the JSON say what went wrong; the other figures still run.
    """
    try:
        result = await measure()
    except Exception as exc:
        say(f"{name} failed: {type(exc).__name__}: {exc}")
        figures.append(failed_figure(name, exc))
        return
    figures.extend(result if isinstance(result, list) else [result])


async def _queue_figures(ctx: Context, figures: list[Figure]) -> list[Figure]:
    """Everything measured against paused daemons and the stand-in.

    Each figure is appended to `figures` as it is measured; the list returned is
    empty, so that a failure to start the servers becomes one error row.
    """
    dirs = {
        name: ctx.data_dir(f"daemon-{name}") for name in ("empty", "pending", "small")
    }
    write_pending(dirs["empty"], 0)
    write_pending(dirs["pending"], BIG_TASKS)
    pending_bytes = (dirs["pending"] / JOURNAL_NAME).stat().st_size
    write_small(dirs["small"], pending=SMALL_TASKS, finished=SMALL_TASKS)

    standin = await ctx.start("standin", "standin", "--step-ms", "20")
    bare = await ctx.start("bare", "bare")
    daemon_args = ("daemon", "--upstream", standin.url, "--data")
    empty, pending, small, history = await asyncio.gather(
        ctx.start("daemon-empty", *daemon_args, str(dirs["empty"])),
        ctx.start("daemon-pending", *daemon_args, str(dirs["pending"])),
        ctx.start("daemon-small", *daemon_args, str(dirs["small"])),
        ctx.start("daemon-history", *daemon_args, str(ctx.scratch / "history")),
    )
    await _guarded(
        figures,
        "enqueue latency",
        lambda: fig_enqueue.measure_latency(empty, pending, BIG_TASKS, pending_bytes),
    )
    await _guarded(
        figures,
        "queue page",
        lambda: fig_pages.measure_page("queue", pending, small, BIG_TASKS, SMALL_TASKS),
    )
    await _guarded(
        figures,
        "history page",
        lambda: fig_pages.measure_page(
            "history", history, small, BIG_TASKS, SMALL_TASKS
        ),
    )
    await _guarded(
        figures, "enqueue rate", lambda: fig_enqueue.measure_rate(bare, empty)
    )
    await _guarded(figures, "proxy", lambda: fig_proxy.measure(empty, standin))
    await ctx.stop_all()
    return []


async def _dispatch_figure(ctx: Context) -> Figure:
    standin = await ctx.start("standin-marks", "standin", "--step-ms", "0", "--marks")
    daemon = await ctx.start(
        "daemon-dispatch",
        "daemon",
        "--upstream",
        standin.url,
        "--data",
        str(ctx.data_dir("daemon-dispatch")),
    )
    try:
        return await fig_dispatch.measure(standin, daemon)
    finally:
        await ctx.stop_all()


async def run(scratch: Path) -> list[Figure]:
    """Every figure, in an order that keeps them from running into each other."""
    logs = OUT_DIR / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    ctx = Context(scratch=scratch, logs=logs)
    figures: list[Figure] = []
    try:
        say(f"writing a journal of {BIG_TASKS:,} finished tasks")
        records = write_history(ctx.data_dir("history"), BIG_TASKS)
        await _guarded(
            figures,
            "start-up replay",
            lambda: fig_replay.measure(scratch / "history", records),
        )
        await _guarded(figures, "queue figures", lambda: _queue_figures(ctx, figures))
        await _guarded(figures, "dispatch gap", lambda: _dispatch_figure(ctx))
        await _guarded(figures, "ingest", lambda: fig_ingest.measure(ctx))
    finally:
        await ctx.stop_all()
    return figures


def main() -> int:
    """`python -m bench`: print the table, write bench/out/results.json."""
    started = time.monotonic()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="inuqueue-bench-"))
    try:
        info = machine(scratch)
        figures = asyncio.run(run(scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.monotonic() - started
    info["loadavg_at_end"] = os.getloadavg()

    text = table(figures)
    short = [f.name for f in figures if f.error is None and not f.passed]
    errors = [f.name for f in figures if f.error is not None]
    disk = info["disk"]
    summary = (
        f"{len(figures) - len(short) - len(errors)} of {len(figures)} figures "
        f"reach their target; short: {', '.join(short) or 'none'}"
        + (f"; errors: {', '.join(errors)}" if errors else "")
        + f".\n{info.get('nproc')} cores ({info.get('cpu', '?')}), "
        f"{info.get('ram_gib', '?')} GiB, {disk.get('fs', '?')} on "
        f"{disk.get('device', '?')} ({disk.get('driver', '?')}), fdatasync p50 "
        f"{info['fdatasync_p50_s'] * 1000:.2f} ms; load average "
        f"{info['loadavg_at_start'][0]:.2f} at the start, "
        f"{info['loadavg_at_end'][0]:.2f} at the end; {elapsed:.0f} s in all."
    )
    print(text)
    print()
    print(summary)
    (OUT_DIR / "table.txt").write_text(text + "\n\n" + summary + "\n")
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": elapsed,
        "machine": info,
        "figures": [figure.as_json() for figure in figures],
    }
    out = OUT_DIR / "results.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {out.relative_to(OUT_DIR.parent.parent)}", file=sys.stderr)
    # A figure short of its target is a result; one that could not be measured is not.
    return 1 if errors else 0
