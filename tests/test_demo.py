"""`inuqueue demo`, the main job, end to end in child processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

# The demo's own waits are bounded; this only stops a hung run.
DEMO_TIMEOUT_S = 240


def test_the_demo_survives_its_kill_and_finishes_every_task(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inuqueue",
            "demo",
            "--data-root",
            str(tmp_path),
            "--step-ms",
            "15",
        ],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        cwd=REPO,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "killing the daemon with no warning (SIGKILL)" in result.stdout
    assert "inuqueue restarted" in result.stdout
    assert result.stdout.rstrip().endswith(
        "demo OK: every task done, images on disk, every callback signed and received"
    )
    # The receiver refuses the first delivery: one callback took a second try.
    assert "delivered after 2 tries (answers [503, 204])" in result.stdout
    images = [p for p in tmp_path.glob("demo-*/data/images/*/*/*") if p.is_file()]
    assert len(images) >= 10
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in images)
