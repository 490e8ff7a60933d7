"""The content-addressed image store: each image is a file named by its SHA-256.

Layout: ``<data>/images/ab/cd/abcd…`` (64 hex digits, two levels of fan-out so that
no directory grows past a few thousand entries), and ``<data>/images/tmp/`` for
images still being written. A file reaches its name only by an atomic rename after
its bytes were fsynced, so a name always holds the bytes that hash to it.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiofiles

from inuqueue.errors import ImageDecodeError, StoreError
from inuqueue.fsutil import fsync_dir

DIGEST_RE = re.compile(r"[0-9a-f]{64}")
# Base64 text is decoded and written in blocks of this size, off the event loop.
WRITE_BLOCK_BYTES = 1024 * 1024
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_B64 = bytes(sorted(set(range(256)) - set(_B64_ALPHABET)))

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
)


def sniff_content_type(head: bytes) -> str | None:
    """The image type the first bytes announce, or None for anything else."""
    for magic, offset, content_type in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if content_type == "image/webp" and not head.startswith(b"RIFF"):
                continue
            return content_type
    return None


def decode_image_input(value: str) -> bytes:
    """Decode an image as the webui accepts it: raw base64 or a data:image/ URI."""
    text = value
    if text.startswith("data:image/"):
        # The webui cuts at ';' and then at ',', so "data:image/png;base64,AAAA".
        try:
            text = text.split(";", 1)[1].split(",", 1)[1]
        except IndexError:
            raise ImageDecodeError("the data: URI has no ';base64,' part") from None
    try:
        data = binascii.a2b_base64(text.encode("ascii", "ignore"))
    except binascii.Error as exc:
        raise ImageDecodeError(f"it is not valid base64 ({exc})") from exc
    if sniff_content_type(data[:16]) is None:
        raise ImageDecodeError("it is not a PNG, JPEG, WEBP or GIF image")
    return data


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image that is durable in the store."""

    digest: str
    bytes: int
    content_type: str


class ImageStore:
    """Writes images atomically under their digest and reads them back verified."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        # A commit that finds its name taken and a removal of that name must not
        # interleave, or a new reference could point at a file just deleted.
        self._names_lock = threading.Lock()
        # Reads still going for callers that gave up; a stop waits for them.
        self._reads: set[asyncio.Task[bytes]] = set()

    def open(self) -> None:
        """Create the directories and drop temp files a crash left behind."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()

    def path_for(self, digest: str) -> Path:
        """Where the image with this digest lives."""
        if not DIGEST_RE.fullmatch(digest):
            raise ValueError(f"{digest!r} is not a SHA-256 hex digest")
        return self.root / digest[:2] / digest[2:4] / digest

    def exists(self, digest: str) -> bool:
        """Whether an image with this digest is stored."""
        return self.path_for(digest).is_file()

    def writer(self) -> ImageWriter:
        """A writer that takes one image as base64 text, piece by piece."""
        return ImageWriter(self)

    async def put_bytes(self, data: bytes) -> StoredImage:
        """Store an image already in memory (an img2img input)."""
        return await asyncio.to_thread(self._put_bytes_sync, data)

    async def read_verified(self, digest: str) -> bytes:
        """The image's bytes; StoreError if they no longer hash to the digest."""
        path = self.path_for(digest)
        # Shielded: a reader that gives up (a client gone) must not leave the file
        # open in the executor; the read finishes and closes it either way, and
        # `drain` lets a stop wait for it.
        read = asyncio.ensure_future(_read_file(path))
        self._reads.add(read)
        read.add_done_callback(self._reads.discard)
        data = await asyncio.shield(read)
        actual = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        if actual != digest:
            raise StoreError(f"{path} does not hash to its name; the file is damaged")
        return data

    async def drain(self) -> None:
        """Wait for reads whose callers gave up, so that no file stays open."""
        if self._reads:
            await asyncio.gather(*self._reads, return_exceptions=True)

    def _put_bytes_sync(self, data: bytes) -> StoredImage:
        digest = hashlib.sha256(data).hexdigest()
        tmp = self._tmp_path()
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        content_type = sniff_content_type(data[:16]) or "application/octet-stream"
        return self._commit(tmp, digest, len(data), content_type)

    def _tmp_path(self) -> Path:
        return self.tmp_dir / f"{uuid.uuid4().hex}.part"

    def _commit(self, tmp: Path, digest: str, size: int, ctype: str) -> StoredImage:
        """Move a fsynced temp file to its name, or drop it if the name exists."""
        final = self.path_for(digest)
        with self._names_lock:
            if final.is_file():
                tmp.unlink()
                # A fresh time keeps a reused image out of reach of collection.
                os.utime(final)
            else:
                self._make_fanout_dirs(final.parent)
                os.replace(tmp, final)
                fsync_dir(final.parent)
        return StoredImage(digest=digest, bytes=size, content_type=ctype)

    def _make_fanout_dirs(self, leaf: Path) -> None:
        """Create images/ab/cd as needed; each new entry is made durable."""
        for directory in (leaf.parent, leaf):
            if not directory.is_dir():
                directory.mkdir(exist_ok=True)
                fsync_dir(directory.parent)

    def remove_if_idle(self, digest: str, idle_s: float) -> bool:
        """Delete an image not written or reused for `idle_s`; whether it went."""
        path = self.path_for(digest)
        with self._names_lock:
            try:
                if time.time() - path.stat().st_mtime < idle_s:
                    return False
                path.unlink()
            except FileNotFoundError:
                return True
        return True

    def digests(self) -> Iterator[str]:
        """Every digest in the store (a walk of the fan-out directories)."""
        for first in self.root.iterdir():
            if len(first.name) != 2 or not first.is_dir():
                continue
            for second in first.iterdir():
                if not second.is_dir():
                    continue  # a stray file is no image of ours
                for path in second.iterdir():
                    if DIGEST_RE.fullmatch(path.name) and path.is_file():
                        yield path.name


async def _read_file(path: Path) -> bytes:
    async with aiofiles.open(path, "rb") as f:
        return await f.read()


class ImageWriter:
    """Decodes streamed base64 into a temp file, hashing as it goes."""

    def __init__(self, store: ImageStore) -> None:
        self._store = store
        self._text = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0
        self._head = b""
        self._tmp = store._tmp_path()
        self._file: IO[bytes] | None = None

    async def feed_base64(self, text: bytes) -> None:
        """Take the next piece of base64 text; memory stays within one block."""
        self._text += text
        if len(self._text) >= WRITE_BLOCK_BYTES:
            block = self._take_whole_quads()
            await asyncio.to_thread(self._absorb, block)

    async def finish(self) -> StoredImage:
        """Write the rest, fsync, and move the image to its name."""
        block = bytes(self._text)
        self._text.clear()
        return await asyncio.to_thread(self._finish_sync, block)

    async def abort(self) -> None:
        """Throw away what was written (the answer broke off)."""
        await asyncio.to_thread(self._abort_sync)

    def _take_whole_quads(self) -> bytes:
        clean = bytes(self._text).translate(None, _NOT_B64)
        whole = len(clean) - len(clean) % 4
        self._text = bytearray(clean[whole:])
        return clean[:whole]

    def _absorb(self, text: bytes) -> None:
        try:
            data = binascii.a2b_base64(text)
        except binascii.Error as exc:
            raise ImageDecodeError(f"an image is not valid base64 ({exc})") from exc
        if self._file is None:
            # Someone may have removed the directory under a running daemon.
            self._tmp.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._tmp.open("wb")
            self._head = data[:16]
        self._hash.update(data)
        self._file.write(data)
        self._size += len(data)

    def _finish_sync(self, rest: bytes) -> StoredImage:
        if rest:
            self._absorb(rest.translate(None, _NOT_B64))
        if self._file is None or self._size == 0:
            raise ImageDecodeError("an image in the answer is empty")

        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        content_type = sniff_content_type(self._head) or "application/octet-stream"
        digest = self._hash.hexdigest()
        return self._store._commit(self._tmp, digest, self._size, content_type)

    def _abort_sync(self) -> None:
        if self._file is not None:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()
