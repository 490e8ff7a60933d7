"""The append-only journal: every change to the queue, one JSON record per line.

On-disk format
--------------
``<data>/journal.jsonl`` holds UTF-8 JSON lines, one record each, for example::

    {"seq":17,"ts":"2026-12-04T12:00:00.123Z","op":"start","task_id":"…",
     "crc":"1c291ca3"}

(one line on disk; folded here).

``seq``
    1, 2, 3, … without a gap. Replay refuses a line whose seq is not the one before
    plus one, so a record can neither be lost in the middle nor applied twice.
``ts``
    When the record was written: UTC, ISO 8601, millisecond precision.
``op``
    What happened. The other keys depend on it; ``inuqueue.state`` applies them.
``crc``
    Always the last key: CRC-32 (zlib) of the line's bytes as they would read without
    the checksum (everything before ``,"crc"``, then ``}``), as 8 hex digits.

A record is durable once the line and its newline are written and the file is
fsynced. Several records waiting at once share one write and one fsync (group
commit); nobody is told a record is durable before that fsync returned.

What the format buys: any JSON tool reads it, a torn or damaged line is caught by its
checksum even when it still parses, and a crash can only ever leave an incomplete
*last* line, which replay cuts and sets aside. What it costs: it grows with every
change; replay at start-up reads it whole, and the checksum needs the fixed suffix.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import structlog

from inuqueue.errors import ConfigError, JournalCorrupt, JournalError
from inuqueue.fsutil import fsync_dir

JOURNAL_NAME = "journal.jsonl"
# A snapshot is written under the journal's name plus this, then renamed over it.
COMPACT_SUFFIX = ".compact"

# `,"crc":"` + 8 hex digits + `"}`
_CRC_SUFFIX_LEN = 18
_CRC_PREFIX = b',"crc":"'

Record = dict[str, Any]

log = structlog.get_logger("inuqueue.journal")


def utc_now_iso() -> str:
    """The current time as ISO 8601 UTC with millisecond precision."""
    now = datetime.now(timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_record(record: Record) -> bytes:
    """One journal line, checksum and newline included."""
    body = orjson.dumps(record)
    crc = zlib.crc32(body)
    return body[:-1] + b',"crc":"%08x"}\n' % crc


def decode_line(line: bytes) -> Record:
    """Parse one journal line (without its newline); ValueError says what is wrong."""
    if line.endswith(b"\r"):
        # An editor or git's autocrlf turned the newlines into CRLF.
        line = line[:-1]
    if not line.strip():
        raise ValueError("the line is empty")
    suffix = line[-_CRC_SUFFIX_LEN:]
    if len(line) <= _CRC_SUFFIX_LEN or not suffix.startswith(_CRC_PREFIX):
        raise ValueError("the record has no checksum")
    try:
        expected = int(suffix[len(_CRC_PREFIX) : -2], 16)
    except ValueError:
        raise ValueError("the checksum is not hexadecimal") from None
    # The checksum covers the line up to its suffix, then "}": no copy of the line.
    body = memoryview(line)[:-_CRC_SUFFIX_LEN]
    if zlib.crc32(b"}", zlib.crc32(body)) != expected:
        raise ValueError("the checksum does not match the record")

    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the record is not JSON ({exc})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        raise ValueError("the record has no sequence number")
    del record["crc"]
    return record


class JournalReader:
    """Reads a journal once, front to back, and cuts an incomplete last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_seq = 0
        self.count = 0
        self.good_bytes = 0
        self.torn_bytes = 0
        self.snapshot_seq = 0
        self.snapshot_bytes = 0

    def records(self, *, cut_torn_tail: bool = True) -> Iterator[Record]:
        """Every complete record in order; raises JournalCorrupt for a bad one.

        `cut_torn_tail` is for start-up only: a reader beside a running writer
        can meet a last line that is still being written.
        """
        if not self.path.exists():
            return
        if self.path.is_dir():
            raise ConfigError(
                f"{self.path} is a directory, not the journal; move it away (or "
                "give another --data)"
            )

        leftover = self.path.with_name(self.path.name + COMPACT_SUFFIX)
        if cut_torn_tail and leftover.exists():
            # A compaction that crashed before its rename: the journal is whole.
            leftover.unlink()
        with self.path.open("rb") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    # Only the very last line can lack its newline: a crash tore it.
                    self.torn_bytes = len(line)
                    break
                try:
                    record = decode_line(line[:-1])
                except ValueError as exc:
                    raise JournalCorrupt(self.path, lineno, str(exc)) from exc
                if not self._in_sequence(record, lineno):
                    raise JournalCorrupt(
                        self.path,
                        lineno,
                        f"sequence number {record['seq']} follows {self.last_seq}",
                    )
                self.last_seq = record["seq"]
                self.count += 1
                self.good_bytes += len(line)
                if self.snapshot_seq == self.last_seq:
                    self.snapshot_bytes = self.good_bytes
                yield record

        if self.torn_bytes and cut_torn_tail:
            self._set_aside_torn_tail()

    def _in_sequence(self, record: Record, lineno: int) -> bool:
        """Seq n follows n - 1; a snapshot opens the file and its lines share one."""
        op = record["op"]
        if op == "snapshot":
            if lineno != 1:
                return False
            self.snapshot_seq = record["seq"]
            return True
        if op == "snapshot_task":
            return self.snapshot_seq > 0 and record["seq"] == self.last_seq
        return bool(record["seq"] == self.last_seq + 1)

    def _set_aside_torn_tail(self) -> None:
        """Copy the torn last line beside the journal, then cut it off."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{self.path.name}.torn-{stamp}")
        with self.path.open("r+b") as f:
            f.seek(self.good_bytes)
            aside.write_bytes(f.read())
            f.truncate(self.good_bytes)
            f.flush()
            os.fsync(f.fileno())
        log.warning(
            "journal.torn_tail_cut",
            path=str(self.path),
            cut_bytes=self.torn_bytes,
            kept_records=self.count,
            saved_to=str(aside),
        )


class JournalWriteFailed(JournalError):
    """A write or fsync of the journal failed; nothing after it was acknowledged."""

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(cause.errno, f"writing {path} failed: {cause.strerror}")
        self.path = path
        self.cause = cause


class Journal:
    """Appends records with group commit; `wait_durable` says when to trust them."""

    def __init__(
        self,
        path: Path,
        reader: JournalReader,
        *,
        fsync: bool,
        compact_bytes: int = 0,
    ) -> None:
        self.path = path
        self._fsync = fsync
        # Past this size (and twice the last snapshot) a compaction is due; 0: never.
        self.compact_bytes = compact_bytes
        self.compact_due = asyncio.Event()
        self._seq = reader.last_seq
        self.durable_seq = reader.last_seq
        self.records = reader.count
        self.bytes = reader.good_bytes
        self.failure: JournalWriteFailed | None = None
        # `failed` is set while writes are refused after a failure, `healthy` else.
        self.failed = asyncio.Event()
        self.healthy = asyncio.Event()
        self.healthy.set()
        # Told the newest durable seq after each fsync (the event hub listens).
        self.on_durable: Callable[[int], None] | None = None
        self._pending: list[bytes] = []
        self._batch: asyncio.Future[None] | None = None
        # The batch being written: its last seq and the future it resolves.
        self._inflight: tuple[int, asyncio.Future[None]] | None = None
        self._wake = asyncio.Event()
        self._fd = -1
        self._writer: asyncio.Task[None] | None = None
        # Held while a batch is written and while the file is swapped for a snapshot.
        self._write_lock = asyncio.Lock()
        # Size of the last snapshot: compaction waits until the file is well past it.
        self.snapshot_bytes = reader.snapshot_bytes

    async def start(self) -> None:
        """Open the file for appending and start the writer."""
        created = not self.path.exists()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
        self._fd = os.open(self.path, flags, 0o644)
        if created:
            # A new file is only durable once its directory entry is.
            fsync_dir(self.path.parent)
        self._writer = asyncio.create_task(self._run(), name="journal-writer")

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest record appended (durable or not)."""
        return self._seq

    def append(
        self, op: str, fields: Record, check: Callable[[Record], None] | None = None
    ) -> Record:
        """Give the record its seq and queue it for the next write.

        `check` sees the record first and may refuse it by raising: then nothing
        is queued and the seq is not used, so that no record a replay would refuse
        ever reaches the file.
        """
        if self.failure is not None:
            raise self.failure

        record: Record = {"seq": self._seq + 1, "ts": utc_now_iso(), "op": op, **fields}
        line = encode_record(record)
        if check is not None:
            check(record)
        self._seq += 1
        self._pending.append(line)
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
        self._wake.set()
        return record

    async def wait_durable(self, seq: int) -> None:
        """Return once record `seq` is fsynced; raise JournalWriteFailed if not."""
        while self.durable_seq < seq:
            if self._inflight is not None and seq <= self._inflight[0]:
                future = self._inflight[1]
            elif self._batch is not None:
                future = self._batch
            else:
                raise self.failure or JournalError(f"record {seq} was never appended")
            # shield: one waiter giving up must not cancel the batch for the others.
            await asyncio.shield(future)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            async with self._write_lock:
                await self._write_batch()

    async def _write_batch(self) -> None:
        """Write and fsync every queued record as one batch (under the lock)."""
        if not self._pending or self._batch is None:
            return

        lines, batch, last_seq = self._pending, self._batch, self._seq
        self._pending, self._batch = [], None
        self._inflight = (last_seq, batch)
        data = b"".join(lines)
        try:
            await asyncio.to_thread(self._write_and_sync, data)
        except OSError as exc:
            self.failure = JournalWriteFailed(self.path, exc)
            self.failed.set()
            self.healthy.clear()
            log.error("journal.write_failed", path=str(self.path), error=str(exc))
            self._fail_waiters(batch)
            return
        finally:
            self._inflight = None

        self.durable_seq = last_seq
        self.records += len(lines)
        self.bytes += len(data)
        batch.set_result(None)
        grown = self.bytes >= 2 * self.snapshot_bytes
        if self.compact_bytes and self.bytes >= self.compact_bytes and grown:
            self.compact_due.set()
        if self.on_durable is not None:
            self.on_durable(last_seq)

    async def compact(self, snapshot: Callable[[], list[tuple[str, Record]]]) -> None:
        """Replace the file by a snapshot of the state, atomically (D7).

        `snapshot()` is called once everything appended so far is durable, so the
        state it describes is exactly the file's. Records appended meanwhile wait
        and go into the new file after the snapshot.
        """
        async with self._write_lock:
            await self._write_batch()
            if self.failure is not None:
                raise self.failure
            stamp = utc_now_iso()
            seq = self._seq
            lines = [
                encode_record({"seq": seq, "ts": stamp, "op": op, **fields})
                for op, fields in snapshot()
            ]
            await asyncio.to_thread(self._swap_in, lines)
            self.records = len(lines)
            self.bytes = sum(len(line) for line in lines)
            self.snapshot_bytes = self.bytes
            self.compact_due.clear()
        log.info(
            "journal.compacted",
            path=str(self.path),
            seq=seq,
            records=self.records,
            bytes=self.bytes,
        )

    def _swap_in(self, lines: list[bytes]) -> None:
        """Write the snapshot beside the journal, then rename it over the journal."""
        tmp = self.path.with_name(self.path.name + COMPACT_SUFFIX)
        with tmp.open("wb") as f:
            for line in lines:
                f.write(line)
            f.flush()
            os.fsync(f.fileno())
        # Windows cannot replace a file that is open, so it is closed first; a
        # crash until the rename leaves the old journal whole and the temp file
        # is dropped at the next start.
        os.close(self._fd)
        self._fd = -1
        flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0)
        try:
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
        finally:
            # On a failed rename the old journal is still whole: go on with it.
            self._fd = os.open(self.path, flags)

    def _fail_waiters(self, batch: asyncio.Future[None]) -> None:
        assert self.failure is not None
        for future in (batch, self._batch):
            if future is not None and not future.done():
                future.set_exception(self.failure)
                # Mark it retrieved: every waiter hears of it through wait_durable.
                future.exception()
        self._batch = None
        self._pending = []

    def _write_and_sync(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self._fsync:
            _datasync(self._fd)

    async def heal(self) -> None:
        """After a failed write: cut the file back to what was durable, and go on.

        The records that failed were never acknowledged; the caller rebuilds its
        state from the file. Raises OSError if the disk still refuses.
        """
        await asyncio.to_thread(self._cut_to_durable)
        self._seq = self.durable_seq
        self._pending = []
        self._batch = None
        self.failure = None
        self.failed.clear()
        self.healthy.set()
        log.info("journal.writable_again", path=str(self.path), seq=self.durable_seq)

    def _cut_to_durable(self) -> None:
        os.ftruncate(self._fd, self.bytes)
        _datasync(self._fd)

    async def close(self) -> None:
        """Write what is queued, stop the writer and close the file."""
        if self.failure is None and self._seq > self.durable_seq:
            with contextlib.suppress(JournalError):
                await self.wait_durable(self._seq)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _datasync(fd: int) -> None:
    # fdatasync skips the inode's timestamps, which replay never needs; it is
    # missing on macOS and Windows, where fsync is the portable call.
    sync = getattr(os, "fdatasync", os.fsync)
    sync(fd)
