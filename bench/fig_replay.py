"""Start-up replay of a million-record journal against parsing it with orjson.

Both are single-threaded and CPU-bound, so they are compared on the CPU time of
their process, which the other load of a shared machine disturbs far less than
the wall clock; the wall times are shown and kept too.
"""

from __future__ import annotations

from pathlib import Path

from bench.common import Figure, say
from bench.procs import run_child


async def measure(data_dir: Path, records: int) -> Figure:
    """Replay time against orjson alone; orjson twice (before, after), the best."""
    say("replay: orjson alone")
    first = await run_child("bench.replay_child", "orjson", str(data_dir))
    say(f"replay: the daemon's replay of {records:,} records")
    replay = await run_child("bench.replay_child", "replay", str(data_dir))
    say("replay: orjson alone, again")
    second = await run_child("bench.replay_child", "orjson", str(data_dir))
    if replay["records"] != records or first["records"] != records:
        raise RuntimeError(f"expected {records} records, read {replay['records']}")
    value = replay["cpu_seconds"]
    baseline = min(first["cpu_seconds"], second["cpu_seconds"])
    wall = replay["seconds"]
    base_wall = min(first["seconds"], second["seconds"])
    return Figure(
        name=f"start-up replay, {records / 1e6:g}M records",
        value=value,
        baseline=baseline,
        unit="s",
        sense="max",
        target=3.0,
        shown_value=f"{value:.2f} s CPU ({wall:.2f} s wall)",
        shown_baseline=f"{baseline:.2f} s CPU (orjson; {base_wall:.2f} s wall)",
        target_text="<= 3x",
        details={
            "tasks": replay["tasks"],
            "journal_bytes": (data_dir / "journal.jsonl").stat().st_size,
            "replay_peak_rss": replay["peak_rss"],
            "wall_s": wall,
            "baseline_wall_s": base_wall,
            "orjson_runs_cpu_s": [first["cpu_seconds"], second["cpu_seconds"]],
        },
    )
