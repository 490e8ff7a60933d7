"""Offline care of a data directory: journal check and repair, store verify."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import orjson

from inuqueue.errors import ConfigError
from inuqueue.journal import JOURNAL_NAME, decode_line
from inuqueue.lock import DataDirLock
from inuqueue.state import QueueState
from inuqueue.store import ImageStore

DAMAGED_DIR = "damaged"


@dataclass
class JournalScan:
    """What a front-to-back read of the journal found, changing nothing."""

    path: Path
    records: int = 0
    last_seq: int = 0
    good_bytes: int = 0
    total_bytes: int = 0
    bad_lineno: int | None = None
    bad_reason: str | None = None
    state: QueueState = field(default_factory=QueueState)

    @property
    def healthy(self) -> bool:
        """Whether every byte of the file is a good record."""
        return self.bad_lineno is None and self.good_bytes == self.total_bytes


def scan_journal(data_dir: Path) -> JournalScan:
    """Read the journal record by record, folding it, until the first problem."""
    path = data_dir / JOURNAL_NAME
    scan = JournalScan(path=path)
    if not path.exists():
        return scan

    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not the journal; move it away")
    scan.total_bytes = path.stat().st_size
    snapshot_seq = 0
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            problem = None
            if not line.endswith(b"\n"):
                problem = "the last record is incomplete (a crash tore it)"
            else:
                try:
                    record = decode_line(line[:-1])
                    op, seq = record["op"], record["seq"]
                    if op == "snapshot" and lineno == 1:
                        snapshot_seq = seq
                    elif (
                        op == "snapshot_task" and snapshot_seq and seq == scan.last_seq
                    ):
                        pass
                    elif seq != scan.last_seq + 1:
                        problem = f"sequence number {seq} follows {scan.last_seq}"
                    if problem is None:
                        scan.state.apply(record)
                except ValueError as exc:  # StateError too: it does not fit
                    problem = str(exc)
                except (KeyError, TypeError) as exc:
                    problem = f"the record lacks or mistypes a field ({exc!r})"
            if problem is not None:
                scan.bad_lineno, scan.bad_reason = lineno, problem
                break
            scan.records += 1
            scan.last_seq = record["seq"]
            scan.good_bytes += len(line)
    return scan


def describe_scan(scan: JournalScan, store: ImageStore) -> list[str]:
    """The lines `inuqueue journal check` prints."""
    state = scan.state
    statuses = Counter(task.status for task in state.tasks.values())
    lines = [
        f"journal {scan.path}: {scan.records} records, last seq {scan.last_seq}, "
        f"{scan.good_bytes} of {scan.total_bytes} bytes good",
        "tasks: "
        + (", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "none")
        + (" (queue paused)" if state.paused else ""),
    ]
    if scan.bad_lineno is not None:
        lost = scan.total_bytes - scan.good_bytes
        lines.append(
            f"DAMAGED at line {scan.bad_lineno}: {scan.bad_reason}. 'inuqueue journal "
            f"repair' would cut the last {lost} bytes and keep a copy of them."
        )
    present = set(store.digests()) if store.root.exists() else set()
    referenced = set(state.image_refs)
    missing = referenced - present
    lines.append(
        f"images: {len(present)} stored, {len(referenced)} referenced, "
        f"{len(missing)} missing, {len(present - referenced)} unreferenced"
    )
    if missing:
        owners = sorted(
            t.task_id for t in state.tasks.values() if set(t.digests()) & missing
        )
        lines.append(
            f"MISSING images of tasks {', '.join(owners[:10])}: requeue them "
            "(POST /inuqueue/v1/task/<id>/requeue) to make the images anew"
        )
    if not state.tasks and present:
        lines.append(
            f"NO JOURNAL RECORDS, but {len(present)} images are stored: the journal "
            "is missing or empty. Restore it from a backup before starting the "
            "daemon; the images are kept either way."
        )
    return lines


def repair_journal(data_dir: Path) -> list[str]:
    """Cut the journal back to its last good record, keeping a copy of the rest."""
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        scan = scan_journal(data_dir)
        if scan.healthy:
            return [f"journal {scan.path}: nothing to repair ({scan.records} records)"]

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        backup = scan.path.with_name(f"{scan.path.name}.cut-{stamp}")
        with scan.path.open("r+b") as f:
            f.seek(scan.good_bytes)
            cut = f.read()
            backup.write_bytes(cut)
            f.truncate(scan.good_bytes)
            f.flush()
            os.fsync(f.fileno())
    finally:
        lock.release()
    cut_lines = cut.count(b"\n") or 1
    touched = _tasks_in(cut)
    return [
        f"journal {scan.path}: kept {scan.records} records (up to seq "
        f"{scan.last_seq}); cut {len(cut)} bytes, {cut_lines} line(s), "
        f"from line {scan.bad_lineno} ({scan.bad_reason})",
        f"the cut part is saved in {backup}",
        "what the cut records said is lost for tasks: "
        + (", ".join(touched[:20]) or "none that could be read")
        + (f" (and {len(touched) - 20} more)" if len(touched) > 20 else ""),
        "their images stay in the store (nothing collects an image that only a "
        "cut record pointed at)",
    ]


def _tasks_in(cut: bytes) -> list[str]:
    """The task ids the cut lines name, as far as they still parse."""
    seen: dict[str, None] = {}
    for line in cut.splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        task = record.get("task")
        task_id = task.get("task_id") if isinstance(task, dict) else None
        task_id = task_id or record.get("task_id")
        if isinstance(task_id, str):
            seen[task_id] = None
    return list(seen)


def verify_store(data_dir: Path) -> tuple[list[str], bool]:
    """Re-hash every image; set aside those whose bytes do not match their name."""
    store = ImageStore(data_dir / "images")
    damaged_dir = store.root / DAMAGED_DIR
    checked = 0
    damaged = []
    if store.root.exists():
        for digest in list(store.digests()):
            path = store.path_for(digest)
            checked += 1
            if _sha256(path) != digest:
                damaged_dir.mkdir(exist_ok=True)
                os.replace(path, damaged_dir / digest)
                damaged.append(digest)
    lines = [f"images: {checked} checked, {len(damaged)} damaged"]
    for digest in damaged:
        lines.append(f"DAMAGED {digest}: moved to {damaged_dir / digest}")
    return lines, not damaged


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
