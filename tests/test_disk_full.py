"""ENOSPC on a real size-limited filesystem (D8), where the machine allows one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# A tmpfs this small fills within a few hundred requests.
TMPFS_SIZE = "1m"
RUN_TIMEOUT_S = 120


def test_a_full_disk_refuses_changes_keeps_reads_and_recovers(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount (util-linux)")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    probe = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={TMPFS_SIZE}",
            "tmpfs",
            str(mount_point),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    if probe.returncode != 0:
        pytest.skip(f"this machine allows no private tmpfs: {probe.stderr.strip()}")

    script = (
        f'mount -t tmpfs -o size={TMPFS_SIZE} tmpfs "$1" && '
        'exec "$2" -m tests.enospc_scenario "$1"'
    )
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(mount_point),
            sys.executable,
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=REPO,
    )

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
