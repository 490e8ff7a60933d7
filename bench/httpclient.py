"""A lean HTTP/1.1 keep-alive client for load, so that the server is what is measured.

aiohttp's client costs a few hundred microseconds of Python per request, more than a
bare aiohttp server spends answering it; with two cores, that client would be the
bottleneck of every baseline. This one writes prepared request bytes and reads the
answer with asyncio streams (Content-Length or chunked), nothing more. Every figure
uses the same client for its value and its baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

HOST = "127.0.0.1"


@dataclass
class Answer:
    """A status and a body."""

    status: int
    body: bytes


def build_request(
    method: str,
    path: str,
    port: int,
    body: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The bytes of one request, to be sent as they are, again and again."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive connection to a loopback server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        """Connect to 127.0.0.1:port."""
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> Answer:
        """Send one prepared request and read its whole answer."""
        self._writer.write(raw)
        reader = self._reader
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length: int | None = None
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            body = await self._read_chunked()
        elif length is not None:
            body = await reader.readexactly(length) if length else b""
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await reader.read()
        return Answer(status, body)

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        reader = self._reader
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                # Trailers (none expected) end with an empty line.
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append((await reader.readexactly(size + 2))[:-2])

    async def close(self) -> None:
        """Close the connection."""
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


async def request(port: int, method: str, path: str, body: bytes = b"") -> Answer:
    """One request on a connection of its own."""
    conn = await Connection.open(port)
    try:
        return await conn.send(build_request(method, path, port, body))
    finally:
        await conn.close()


@dataclass
class LoadResult:
    """What a closed-loop load run did."""

    completed: int
    seconds: float
    latencies: list[float]
    bad_status: int

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return self.completed / self.seconds if self.seconds > 0 else 0.0


async def closed_loop(
    port: int,
    raw: bytes,
    *,
    concurrency: int,
    total: int,
    max_seconds: float,
    expect: int,
) -> LoadResult:
    """`concurrency` clients, each sending `raw` as soon as its last answer came.

    Stops after `total` answers or `max_seconds`, whichever comes first.
    """
    conns = [await Connection.open(port) for _ in range(concurrency)]
    latencies: list[float] = []
    bad = 0
    sent = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker(conn: Connection) -> None:
        nonlocal bad, sent
        while sent < total and time.perf_counter() < deadline:
            sent += 1
            t0 = time.perf_counter()
            answer = await conn.send(raw)
            latencies.append(time.perf_counter() - t0)
            if answer.status != expect:
                bad += 1

    try:
        await asyncio.gather(*(worker(conn) for conn in conns))
        elapsed = time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()
    return LoadResult(len(latencies), elapsed, latencies, bad)


async def sequential(
    port: int, raw: bytes, *, count: int, warmup: int, expect: int
) -> list[float]:
    """Latencies of `count` requests sent one after the other on one connection."""
    conn = await Connection.open(port)
    latencies = []
    try:
        for index in range(warmup + count):
            t0 = time.perf_counter()
            answer = await conn.send(raw)
            elapsed = time.perf_counter() - t0
            if answer.status != expect:
                raise RuntimeError(
                    f"expected {expect}, got {answer.status}: {answer.body[:300]!r}"
                )
            if index >= warmup:
                latencies.append(elapsed)
    finally:
        await conn.close()
    return latencies
