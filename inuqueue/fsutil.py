"""Small portable file-system helpers for durable writes."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable, where the platform allows."""
    if os.name == "nt":
        # Windows cannot open a directory as a file; NTFS journals its metadata,
        # so a rename is durable once MoveFileEx returns.
        return

    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
