"""The journal: its line format, group commit, torn tails and damaged lines."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import orjson
import pytest

from inuqueue import journal as journal_module
from inuqueue.errors import JournalCorrupt
from inuqueue.journal import (
    Journal,
    JournalReader,
    JournalWriteFailed,
    decode_line,
    encode_record,
)


def _write_records(path: Path, count: int) -> list[bytes]:
    lines = [
        encode_record({"seq": seq, "ts": "2026-01-01T00:00:00.000Z", "op": "x"})
        for seq in range(1, count + 1)
    ]
    path.write_bytes(b"".join(lines))
    return lines


def test_a_line_is_json_with_the_checksum_last() -> None:
    line = encode_record({"seq": 1, "op": "enqueue", "task": {"name": "ü"}})

    assert line.endswith(b'"}\n')
    parsed = orjson.loads(line)
    assert list(parsed)[-1] == "crc"
    assert decode_line(line[:-1]) == {"seq": 1, "op": "enqueue", "task": {"name": "ü"}}


def test_a_changed_byte_that_still_parses_is_caught() -> None:
    line = encode_record({"seq": 1, "op": "start", "priority": 5})[:-1]
    damaged = line.replace(b'"priority":5', b'"priority":6')

    orjson.loads(damaged)  # still valid JSON
    with pytest.raises(ValueError, match="checksum does not match"):
        decode_line(damaged)


async def test_concurrent_appends_share_fsyncs_and_keep_their_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    real_sync = journal_module._datasync

    def counting_sync(fd: int) -> None:
        syncs.append(fd)
        real_sync(fd)

    monkeypatch.setattr(journal_module, "_datasync", counting_sync)
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, JournalReader(path), fsync=True)
    await journal.start()

    seqs = [journal.append("x", {"n": n})["seq"] for n in range(100)]
    await asyncio.gather(*(journal.wait_durable(seq) for seq in seqs))
    await journal.close()

    reader = JournalReader(path)
    assert [r["n"] for r in reader.records()] == list(range(100))
    assert journal.durable_seq == 100
    assert 1 <= len(syncs) < 100


async def test_a_failed_write_is_never_acknowledged_and_stops_later_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, JournalReader(path), fsync=True)
    await journal.start()
    await journal.wait_durable(journal.append("x", {})["seq"])

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal_module, "_datasync", full)
    record = journal.append("x", {})
    with pytest.raises(JournalWriteFailed) as caught:
        await journal.wait_durable(record["seq"])
    assert caught.value.cause.errno == errno.ENOSPC
    with pytest.raises(JournalWriteFailed):
        journal.append("x", {})
    assert journal.durable_seq == 1
    await journal.close()


@pytest.mark.parametrize("keep_fraction", [0.0, 0.3, 0.999])
def test_a_torn_last_line_is_cut_and_set_aside(
    tmp_path: Path, keep_fraction: float
) -> None:
    path = tmp_path / "journal.jsonl"
    lines = _write_records(path, 3)
    good = len(lines[0]) + len(lines[1])
    cut = good + max(1, int(len(lines[2]) * keep_fraction))
    with path.open("r+b") as f:
        f.truncate(cut)

    reader = JournalReader(path)
    assert [r["seq"] for r in reader.records()] == [1, 2]

    assert path.stat().st_size == good
    (aside,) = tmp_path.glob("journal.jsonl.torn-*")
    assert aside.read_bytes() == lines[2][: cut - good]


def test_every_cut_of_the_last_line_keeps_the_complete_records(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    lines = _write_records(path, 2)
    whole = b"".join(lines)
    for cut in range(len(lines[0]) + 1, len(whole)):
        path.write_bytes(whole[:cut])
        reader = JournalReader(path)
        assert [r["seq"] for r in reader.records()] == [1], cut
        assert path.read_bytes() == lines[0]


def test_nuls_after_the_last_record_are_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    lines = _write_records(path, 2)
    with path.open("ab") as f:
        f.write(b"\0" * 4096)

    reader = JournalReader(path)
    assert len(list(reader.records())) == 2
    assert path.read_bytes() == b"".join(lines)


def test_a_damaged_middle_line_stops_replay_and_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    lines = _write_records(path, 3)
    damaged = bytearray(lines[1])
    damaged[10] ^= 0x01
    path.write_bytes(lines[0] + bytes(damaged) + lines[2])

    with pytest.raises(JournalCorrupt) as caught:
        list(JournalReader(path).records())
    assert caught.value.lineno == 2
    assert "journal repair" in str(caught.value)
    assert path.read_bytes() == lines[0] + bytes(damaged) + lines[2]


def test_a_gap_in_the_sequence_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    lines = _write_records(path, 3)
    path.write_bytes(lines[0] + lines[2])

    with pytest.raises(JournalCorrupt, match="sequence number 3 follows 1"):
        list(JournalReader(path).records())


def test_crlf_line_endings_are_read_as_the_same_records(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    lines = _write_records(path, 3)
    path.write_bytes(b"".join(line[:-1] + b"\r\n" for line in lines))

    assert [r["seq"] for r in JournalReader(path).records()] == [1, 2, 3]


def test_an_empty_line_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    lines = _write_records(path, 2)
    path.write_bytes(lines[0] + b"\n" + lines[1])

    with pytest.raises(JournalCorrupt, match="line is empty"):
        list(JournalReader(path).records())
