"""No acknowledgement before its fsync: a file layer that loses unsynced writes.

A kill never loses data in the page cache, so it cannot show a missing fsync. Here
the journal's writes stay in memory until it syncs; whenever a client holds a 2xx,
the record it acknowledges must already be on disk.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest

from inuqueue import journal as journal_module
from tests.conftest import API, Daemon


class UnsyncedWritesLost:
    """Stands in for the `os` module of the journal: writes wait for a sync."""

    def __init__(self) -> None:
        self.unsynced: dict[int, bytearray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self.unsynced.setdefault(fd, bytearray()).extend(data)
        return len(data)

    def reach_disk(self, fd: int) -> None:
        data = self.unsynced.pop(fd, bytearray())
        view = memoryview(bytes(data))
        while view:
            view = view[os.write(fd, view) :]


def _install(monkeypatch: pytest.MonkeyPatch, sync: Callable[[int], None]) -> None:
    monkeypatch.setattr(journal_module, "_datasync", sync)


async def _acknowledged_and_on_disk(daemon: Daemon, count: int) -> None:
    """Enqueue concurrently; at each 202, check that its record is on disk."""
    journal = daemon.config.data_dir / "journal.jsonl"

    async def one(n: int) -> None:
        response = await daemon.client.post(f"{API}/queue/txt2img", json={"seed": n})
        assert response.status == 202
        task_id = (await response.json())["task_id"]
        assert task_id.encode() in journal.read_bytes(), f"{task_id} acked, not on disk"

    await asyncio.gather(*(one(n) for n in range(count)))


async def test_every_acknowledged_enqueue_is_on_disk_when_answered(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    shim = UnsyncedWritesLost()
    monkeypatch.setattr(journal_module, "os", shim)

    def sync(fd: int) -> None:
        shim.reach_disk(fd)
        os.fsync(fd)

    _install(monkeypatch, sync)

    await _acknowledged_and_on_disk(daemon, 30)


async def test_the_check_catches_an_acknowledgement_without_fsync(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    shim = UnsyncedWritesLost()
    monkeypatch.setattr(journal_module, "os", shim)
    # A journal that "forgot" its fsync: the bytes never leave the cache.
    _install(monkeypatch, lambda fd: None)

    with pytest.raises(AssertionError, match="acked, not on disk"):
        await _acknowledged_and_on_disk(daemon, 3)
