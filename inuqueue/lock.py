"""One daemon per data directory: an exclusive lock held while the daemon runs.

The lock is the operating system's (flock on POSIX, a byte-range lock on Windows),
so a daemon that was killed leaves nothing behind that could block the next start.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

from inuqueue.errors import ConfigError

LOCK_NAME = "daemon.lock"

if sys.platform == "win32":
    import msvcrt

    def _try_lock(handle: IO[str]) -> bool:
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(handle: IO[str]) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


class DataDirBusy(ConfigError):
    """Another daemon holds the data directory."""


class DataDirLock:
    """Holds `<data>/daemon.lock` exclusively, with the holder's pid inside."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise DataDirBusy naming the process that has it."""
        handle = self.path.open("a+", encoding="ascii")
        if not _try_lock(handle):
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DataDirBusy(
                f"another inuqueue (pid {holder}) is using the data directory "
                f"{self.path.parent}; stop it, or give this one its own --data"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Let the lock go (closing the file releases it)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
