"""What every figure shares: its result row, percentiles, and where files go."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "bench" / "out"
# A child process reports its numbers as one stdout line starting with this.
CHILD_MARK = "BENCH-RESULT "


@dataclass
class Figure:
    """One row of the table: a figure, its baseline, their ratio and the target."""

    name: str
    value: float
    baseline: float
    unit: str
    # "min" when the ratio must be at least `target`, "max" when at most.
    sense: str
    target: float
    # Shown in the table: how `value` and `baseline` read with their units.
    shown_value: str = ""
    shown_baseline: str = ""
    target_text: str = ""
    # Set by a figure whose pass/short is not the ratio alone (the dispatch gap).
    passed_override: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ratio(self) -> float:
        """value / baseline (inf when the baseline is 0)."""
        if self.baseline == 0:
            return math.inf
        return self.value / self.baseline

    @property
    def passed(self) -> bool:
        """Whether the figure reaches its target."""
        if self.error is not None:
            return False
        if self.passed_override is not None:
            return self.passed_override
        if self.sense == "min":
            return self.ratio >= self.target
        return self.ratio <= self.target

    def as_json(self) -> dict[str, Any]:
        """The row with everything measured, for bench/out/."""
        data = asdict(self)
        data["ratio"] = None if math.isinf(self.ratio) else self.ratio
        data["passed"] = self.passed
        return data


def failed_figure(name: str, exc: BaseException) -> Figure:
    """A row for a figure that could not be measured."""
    text = f"{type(exc).__name__}: {exc}"
    return Figure(name, 0.0, 0.0, "", "min", 0.0, error=text, target_text="-")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> str:
    """Seconds as milliseconds for the table."""
    return f"{seconds * 1000:.2f} ms"


def mib(n_bytes: float) -> str:
    """Bytes as MiB for the table."""
    return f"{n_bytes / (1 << 20):.1f} MiB"


def say(message: str) -> None:
    """Progress on stderr, so that stdout keeps only the table."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def child_report(data: dict[str, Any]) -> None:
    """Print a child process's result for the parent to pick up."""
    print(CHILD_MARK + json.dumps(data), flush=True)


def parse_child_report(stdout: str) -> dict[str, Any]:
    """The result a child printed with `child_report`."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            result: dict[str, Any] = json.loads(line[len(CHILD_MARK) :])
            return result
    raise RuntimeError(
        f"the child printed no result; its output ended {stdout[-500:]!r}"
    )
