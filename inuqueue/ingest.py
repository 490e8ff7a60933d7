"""Streams a webui generation answer into the store without holding it in memory.

The answer is one JSON object, ``{"images": ["<base64>", …], "parameters": {…},
"info": "<JSON string>"}``; a batch of large images makes it tens of megabytes. The
parser below walks the top-level object incrementally: each string of ``images`` goes
piece by piece into an `ImageWriter`, every other member is kept as raw JSON (bounded
in size) and parsed once it is complete.
"""

from __future__ import annotations

import enum
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from inuqueue.errors import InuqueueError
from inuqueue.store import ImageStore, ImageWriter, StoredImage

# parameters and info are small, unless a client echoes init images back
# (include_init_images), so a member may take this much before the answer is refused.
MAX_MEMBER_BYTES = 256 * 1024 * 1024

_WS = frozenset(b" \t\r\n")
_STRING_SPECIAL = re.compile(rb'["\\]')
_CONTAINER_SPECIAL = re.compile(rb'["\\{}\[\]]')
_SCALAR_END = re.compile(rb"[,}\s]")


def _first_of(chunk: bytes, start: int, one: bytes, other: bytes) -> int:
    """Index of the first `one` or `other` from `start`, or len(chunk)."""
    a = chunk.find(one, start)
    b = chunk.find(other, start)
    if a < 0:
        return b if b >= 0 else len(chunk)
    return a if b < 0 or a < b else b


class AnswerMalformed(InuqueueError, ValueError):
    """The webui's answer is not the JSON object a generation returns."""


class _S(enum.Enum):
    OBJECT_OPEN = enum.auto()
    KEY_OR_END = enum.auto()
    KEY_START = enum.auto()
    KEY = enum.auto()
    COLON = enum.auto()
    VALUE = enum.auto()
    RAW = enum.auto()
    AFTER_VALUE = enum.auto()
    IMAGE_OR_END = enum.auto()
    IMAGE_START = enum.auto()
    IMAGE = enum.auto()
    IMAGE_ESCAPE = enum.auto()
    AFTER_IMAGE = enum.auto()
    DONE = enum.auto()


class Event(enum.Enum):
    """What the parser found in a piece of the answer."""

    IMAGE_BEGIN = enum.auto()
    IMAGE_DATA = enum.auto()
    IMAGE_END = enum.auto()


class AnswerParser:
    """An incremental parser of the answer's top-level object."""

    def __init__(self, max_member_bytes: int = MAX_MEMBER_BYTES) -> None:
        self.members: dict[str, Any] = {}
        self._max_member_bytes = max_member_bytes
        self._state = _S.OBJECT_OPEN
        self._key = bytearray()
        self._raw = bytearray()
        self._raw_kind = ""
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, chunk: bytes) -> list[tuple[Event, bytes]]:
        """Consume a piece of the answer; return the image events it held."""
        events: list[tuple[Event, bytes]] = []
        i, n = 0, len(chunk)
        while i < n:
            i = self._step(chunk, i, events)
        return events

    def close(self) -> None:
        """Raise AnswerMalformed unless the whole object was read."""
        if self._state is _S.RAW and self._raw_kind == "scalar":
            self._end_raw()
        if self._state is not _S.DONE:
            raise AnswerMalformed("the answer ended before its JSON object did")

    def _step(self, chunk: bytes, i: int, events: list[tuple[Event, bytes]]) -> int:
        state = self._state
        if state is _S.IMAGE:
            # bytes.find runs at memory speed, a regex scan at a fraction of it,
            # and this loop sees every byte of every image.
            end = _first_of(chunk, i, b'"', b"\\")
            if end > i:
                events.append((Event.IMAGE_DATA, chunk[i:end]))
            if end == len(chunk):
                return end
            if chunk[end] == 0x22:  # closing quote
                events.append((Event.IMAGE_END, b""))
                self._state = _S.AFTER_IMAGE
            else:
                self._state = _S.IMAGE_ESCAPE
            return end + 1

        if state is _S.RAW:
            return self._scan_raw(chunk, i)

        byte = chunk[i]
        if state is _S.KEY:
            if self._escaped:
                self._escaped = False
            elif byte == 0x5C:
                self._escaped = True
            elif byte == 0x22:
                self._state = _S.COLON
                return i + 1
            self._key.append(byte)
            return i + 1

        if state is _S.IMAGE_ESCAPE:
            # Base64 needs no escapes; '\/' is the one an encoder may still emit.
            # Escaped whitespace is line wrapping, which base64 decoding skips.
            if byte == 0x2F:
                events.append((Event.IMAGE_DATA, b"/"))
            self._state = _S.IMAGE
            return i + 1

        if byte in _WS and state is not _S.VALUE:
            return i + 1
        return self._structural(byte, i, events)

    def _structural(self, byte: int, i: int, events: list[tuple[Event, bytes]]) -> int:
        state = self._state
        char = chr(byte)
        if state is _S.OBJECT_OPEN and char == "{":
            self._state = _S.KEY_OR_END
        elif state in (_S.KEY_OR_END, _S.KEY_START) and char == '"':
            self._key.clear()
            self._state = _S.KEY
        elif state is _S.KEY_OR_END and char == "}":
            self._state = _S.DONE
        elif state is _S.COLON and char == ":":
            self._state = _S.VALUE
        elif state is _S.VALUE:
            if byte in _WS:
                return i + 1
            if char == "[" and self._key_name() == "images":
                self._state = _S.IMAGE_OR_END
                return i + 1
            self._begin_raw(char)
            return i
        elif state in (_S.IMAGE_OR_END, _S.IMAGE_START) and char == '"':
            events.append((Event.IMAGE_BEGIN, b""))
            self._state = _S.IMAGE
        elif state in (_S.IMAGE_OR_END, _S.AFTER_IMAGE) and char == "]":
            self._state = _S.AFTER_VALUE
        elif state is _S.AFTER_IMAGE and char == ",":
            self._state = _S.IMAGE_START
        elif state is _S.AFTER_VALUE and char == ",":
            self._state = _S.KEY_START
        elif state is _S.AFTER_VALUE and char == "}":
            self._state = _S.DONE
        else:
            raise AnswerMalformed(
                f"unexpected {char!r} in the answer (while expecting {state.name})"
            )
        return i + 1

    def _key_name(self) -> str:
        try:
            name = orjson.loads(b'"' + bytes(self._key) + b'"')
        except orjson.JSONDecodeError as exc:
            raise AnswerMalformed(f"a key of the answer is not JSON: {exc}") from exc
        return str(name)

    def _begin_raw(self, char: str) -> None:
        self._raw.clear()
        self._depth = 0
        self._in_string = False
        self._escaped = False
        if char == '"':
            self._raw_kind = "string"
        elif char in "{[":
            self._raw_kind = "container"
        else:
            self._raw_kind = "scalar"
        self._state = _S.RAW

    def _scan_raw(self, chunk: bytes, i: int) -> int:
        """Copy one member value's bytes until it is complete."""
        if self._raw_kind == "scalar":
            match = _SCALAR_END.search(chunk, i)
            end = match.start() if match else len(chunk)
            self._keep(chunk[i:end])
            if match is not None:
                self._end_raw()
            return end

        pattern = _STRING_SPECIAL if self._in_string else _CONTAINER_SPECIAL
        if self._escaped:
            self._escaped = False
            self._keep(chunk[i : i + 1])
            return i + 1
        match = pattern.search(chunk, i)
        if match is None:
            self._keep(chunk[i:])
            return len(chunk)

        end = match.end()
        self._keep(chunk[i:end])
        special = chunk[match.start()]
        if special == 0x5C:
            self._escaped = True
        elif special == 0x22:
            self._in_string = not self._in_string
            if not self._in_string and self._raw_kind == "string":
                self._end_raw()
        elif special in b"{[":
            self._depth += 1
        else:
            self._depth -= 1
            if self._depth == 0:
                self._end_raw()
        return end

    def _keep(self, data: bytes) -> None:
        self._raw += data
        if len(self._raw) > self._max_member_bytes:
            raise AnswerMalformed(
                f"a member of the answer is over {self._max_member_bytes} bytes"
            )

    def _end_raw(self) -> None:
        name = self._key_name()
        try:
            self.members[name] = orjson.loads(self._raw)
        except orjson.JSONDecodeError as exc:
            raise AnswerMalformed(f"the answer's {name!r} is not JSON: {exc}") from exc
        self._raw = bytearray()
        self._state = _S.AFTER_VALUE


@dataclass
class IngestedAnswer:
    """A generation answer whose images are durable in the store."""

    images: list[StoredImage] = field(default_factory=list)
    members: dict[str, Any] = field(default_factory=dict)


async def ingest_answer(
    chunks: AsyncIterator[bytes], store: ImageStore
) -> IngestedAnswer:
    """Read the answer's chunks, writing each image into the store as it comes."""
    parser = AnswerParser()
    answer = IngestedAnswer()
    writer: ImageWriter | None = None
    try:
        async for chunk in chunks:
            for event, data in parser.feed(chunk):
                if event is Event.IMAGE_BEGIN:
                    writer = store.writer()
                elif event is Event.IMAGE_DATA and writer is not None:
                    await writer.feed_base64(data)
                elif event is Event.IMAGE_END and writer is not None:
                    answer.images.append(await writer.finish())
                    writer = None
        parser.close()
    except BaseException:
        if writer is not None:
            await writer.abort()
        raise

    answer.members = parser.members
    return answer
