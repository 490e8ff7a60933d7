"""Ingest: the memory and the speed of streaming a big answer into the store.

The answers are real stand-in answers (noise images, which do not compress), made
once and kept as files; a loopback file server sends them with sendfile, so no
process but the measured one holds them in memory.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import aiohttp
import orjson

from bench.common import Figure, mib, say
from bench.context import Context
from bench.procs import run_child

# 1152 x 1152 RGB, stored (noise does not compress): 3.98 MB per PNG.
SIDE = 1152
SMALL_BATCH = 16
BIG_BATCH = 64
DOWNLOAD_CHUNK = 1 << 20


async def _generate(url: str, batch: int, into: Path) -> int:
    body = {
        "prompt": "noise",
        "steps": 1,
        "width": SIDE,
        "height": SIDE,
        "batch_size": batch,
        "seed": 1234,
    }
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    timeout = aiohttp.ClientTimeout(total=300)
    async with (
        aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session,
        session.post(
            url + "/sdapi/v1/txt2img", data=orjson.dumps(body), headers=headers
        ) as response,
    ):
        if response.status != 200:
            raise RuntimeError(f"the stand-in answered {response.status}")
        size = 0
        with into.open("wb") as f:
            async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                f.write(chunk)
                size += len(chunk)
    return size


async def measure(ctx: Context) -> list[Figure]:
    """Peak memory against reading whole, 64 images against 16, and MB/s."""
    answers = ctx.data_dir("answers")
    noise = await ctx.start("standin-noise", "standin", "--noise", "--step-ms", "0")
    sizes = {}
    for batch in (SMALL_BATCH, BIG_BATCH):
        say(f"ingest: making an answer of {batch} noise images")
        sizes[batch] = await _generate(noise.url, batch, answers / f"answer-{batch}")
    await ctx.stop("standin-noise")

    files = await ctx.start("files", "files", "--root", str(answers))
    say("ingest: memory, reading whole")
    base = await run_child(
        "bench.ingest_child", "memory", "baseline", f"{files.url}/answer-{SMALL_BATCH}"
    )
    results = {}
    for batch in (SMALL_BATCH, BIG_BATCH):
        say(f"ingest: memory, streaming {batch} images")
        results[batch] = await run_child(
            "bench.ingest_child",
            "memory",
            "ingest",
            f"{files.url}/answer-{batch}",
            str(ctx.data_dir(f"store-mem-{batch}")),
        )
    await ctx.stop("files")

    say("ingest: speed")
    speed = await run_child(
        "bench.ingest_child",
        "speed",
        str(answers / f"answer-{SMALL_BATCH}"),
        str(ctx.data_dir("store-speed")),
    )
    for path in answers.iterdir():
        path.unlink()

    small, big = results[SMALL_BATCH], results[BIG_BATCH]
    for result, batch in ((base, SMALL_BATCH), (small, SMALL_BATCH), (big, BIG_BATCH)):
        if result["images"] != batch:
            raise RuntimeError(f"expected {batch} images, read {result['images']}")
    memory = Figure(
        name=f"ingest peak RSS, {SMALL_BATCH} x 4 MB",
        value=small["added"],
        baseline=base["added"],
        unit="B",
        sense="max",
        target=0.25,
        shown_value=mib(small["added"]),
        shown_baseline=f"{mib(base['added'])} (read whole)",
        target_text="<= 0.25x",
        details={
            "answer_bytes": sizes[SMALL_BATCH],
            "ingest": small,
            "baseline": base,
            "ingest_mb_per_s_over_loopback": sizes[SMALL_BATCH]
            / small["seconds"]
            / 1e6,
        },
    )
    flat = Figure(
        name=f"ingest peak RSS, {BIG_BATCH} vs {SMALL_BATCH} images",
        value=big["added"],
        baseline=small["added"],
        unit="B",
        sense="max",
        target=1.25,
        shown_value=mib(big["added"]),
        shown_baseline=f"{mib(small['added'])} ({SMALL_BATCH} images)",
        target_text="<= 1.25x (same)",
        details={"answer_bytes": sizes[BIG_BATCH], "ingest": big},
    )
    ingest_rate = speed["bytes"] / statistics.median(speed["ingest_s"]) / 1e6
    base_rate = speed["bytes"] / statistics.median(speed["baseline_s"]) / 1e6
    rate = Figure(
        name="ingest speed, to fsynced files",
        value=ingest_rate,
        baseline=base_rate,
        unit="MB/s",
        sense="min",
        target=0.5,
        shown_value=f"{ingest_rate:,.0f} MB/s",
        shown_baseline=f"{base_rate:,.0f} MB/s (in memory)",
        target_text=">= 0.5x",
        details=speed,
    )
    return [memory, flat, rate]
