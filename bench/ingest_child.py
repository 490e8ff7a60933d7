"""Ingest measurements, each in a fresh process so that its memory is its own.

    python -m bench.ingest_child memory baseline URL
    python -m bench.ingest_child memory ingest URL STORE_DIR
    python -m bench.ingest_child speed FILE STORE_DIR

`memory` POSTs to a loopback file server and reads the answer either whole
(`await read()`, `orjson.loads`, every image base64-decoded in memory: the baseline)
or as the consumer does (`ingest_answer` over the daemon's own generation session).
It reports the resident-set peak added by that alone. `speed` feeds the bytes of a
response, already in memory, to `ingest_answer` in the consumer's chunk size, and
times it against decoding and hashing the same bytes in memory.
"""

from __future__ import annotations

import asyncio
import binascii
import gc
import hashlib
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from bench.common import child_report
from inuqueue.config import Config
from inuqueue.consumer import READ_CHUNK_BYTES
from inuqueue.ingest import ingest_answer
from inuqueue.store import ImageStore
from inuqueue.upstream import Upstream

SPEED_ROUNDS = 3
_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "identity"}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    """Set VmHWM back to the current RSS (Linux 4.0+); whether that worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def _warm(upstream: Upstream, url: str) -> None:
    # Worker threads, the connection pool and aiohttp's parser exist in a running
    # daemon before an answer comes; make them here too, before the first number.
    await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.01) for _ in range(8)))
    async with upstream.generation.post(url + "-warm", data=b"{}", headers=_HEADERS):
        pass


async def memory(mode: str, url: str, store_dir: str | None) -> dict[str, Any]:
    """Peak RSS added while one answer is read (baseline) or ingested."""
    upstream = Upstream(Config(upstream=url.rsplit("/", 1)[0]))
    await upstream.open()
    store = None
    if store_dir is not None:
        store = ImageStore(Path(store_dir))
        store.open()
    try:
        await _warm(upstream, url)
        gc.collect()
        reset = _reset_peak()
        before = _status_kib("VmRSS") * 1024
        started = time.perf_counter()
        images = 0
        size = 0
        async with upstream.generation.post(url, data=b"{}", headers=_HEADERS) as resp:
            if resp.status != 200:
                raise RuntimeError(f"the file server answered {resp.status}")
            size = resp.content_length or 0
            if mode == "baseline":
                body = await resp.read()
                parsed = orjson.loads(body)
                decoded = [binascii.a2b_base64(text) for text in parsed["images"]]
                images = len(decoded)
            else:
                assert store is not None
                chunks = resp.content.iter_chunked(READ_CHUNK_BYTES)
                answer = await ingest_answer(chunks, store)
                images = len(answer.images)
        seconds = time.perf_counter() - started
        peak = _status_kib("VmHWM") * 1024
    finally:
        await upstream.close()
    return {
        "mode": mode,
        "rss_before": before,
        "peak": peak,
        "added": max(0, peak - before),
        "peak_was_reset": reset,
        "seconds": seconds,
        "bytes": size,
        "images": images,
    }


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), READ_CHUNK_BYTES):
        yield data[start : start + READ_CHUNK_BYTES]


def _decode_and_hash(data: bytes) -> int:
    images = orjson.loads(data)["images"]
    for text in images:
        hashlib.sha256(binascii.a2b_base64(text)).hexdigest()
    return len(images)


async def speed(data: bytes, store_dir: str) -> dict[str, Any]:
    """MB/s of the response bytes: ingest into fsynced files against in memory."""
    ingest_s: list[float] = []
    baseline_s: list[float] = []
    images = 0
    for round_no in range(SPEED_ROUNDS):
        started = time.perf_counter()
        _decode_and_hash(data)
        baseline_s.append(time.perf_counter() - started)

        root = Path(store_dir) / f"round-{round_no}"
        store = ImageStore(root)
        store.open()
        started = time.perf_counter()
        answer = await ingest_answer(_chunks(data), store)
        ingest_s.append(time.perf_counter() - started)
        images = len(answer.images)
        shutil.rmtree(root)
    return {
        "bytes": len(data),
        "images": images,
        "ingest_s": ingest_s,
        "baseline_s": baseline_s,
    }


def main() -> None:
    """Run one measurement and report it."""
    args = sys.argv[1:]
    if args[0] == "memory":
        result = asyncio.run(
            memory(args[1], args[2], args[3] if len(args) > 3 else None)
        )
    elif args[0] == "speed":
        result = asyncio.run(speed(Path(args[1]).read_bytes(), args[2]))
    else:
        raise SystemExit(f"unknown measurement {args[0]!r}")
    child_report(result)


if __name__ == "__main__":
    main()
