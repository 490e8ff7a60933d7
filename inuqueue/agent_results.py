"""A done task's images the way the Agent Scheduler hands them out.

As base64 data URIs with their infotexts, or as a zip that is streamed one entry at a
time, so that a task of many large images never sits in memory whole.
"""

from __future__ import annotations

import asyncio
import base64
import io
import zipfile
from typing import Any

import structlog
from aiohttp import web

from inuqueue.http import ApiError
from inuqueue.state import Task
from inuqueue.store import ImageStore

log = structlog.get_logger("inuqueue.agent_results")


async def data_uris(store: ImageStore, task: Task) -> list[dict[str, str]]:
    """The task's images as `{"image": data URI, "infotext"}`, in order."""
    data = []
    for image in task.images:
        content = await _read(store, image["digest"])
        encoded = await asyncio.to_thread(_data_uri, image, content)
        data.append({"image": encoded, "infotext": image.get("infotext") or ""})
    return data


def _data_uri(image: dict[str, Any], content: bytes) -> str:
    content_type = image.get("content_type") or "image/png"
    return f"data:{content_type};base64," + base64.b64encode(content).decode("ascii")


async def _read(store: ImageStore, digest: str) -> bytes:
    try:
        return await store.read_verified(digest)
    except (OSError, ValueError) as exc:
        raise ApiError(
            500,
            "image_damaged",
            f"Image {digest} cannot be read ({exc}); run 'inuqueue store verify', "
            "then requeue the task.",
        ) from None


class _Chunks(io.RawIOBase):
    """A write-only, unseekable file whose bytes are taken out as they come, so
    that zipfile writes a streamable archive (data descriptors, no seeking)."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


async def stream_zip(
    request: web.Request, store: ImageStore, task: Task
) -> web.StreamResponse:
    """The images as a zip, sent one entry at a time: one image in memory at most."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f"attachment; filename=results-{task.task_id}.zip",
        }
    )
    await response.prepare(request)
    sink = _Chunks()
    # Images are compressed already: storing them costs nothing and saves CPU.
    archive = zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED)
    for index, image in enumerate(task.images, start=1):
        try:
            content = await _read(store, image["digest"])
        except ApiError as exc:
            # The status line is gone already: cut the stream off, so that the
            # client holds an archive without its directory, never a short one.
            log.warning("results.zip_cut", task_id=task.task_id, error=exc.message)
            if request.transport is not None:
                request.transport.close()
            return response
        name = _entry_name(index, image)
        await asyncio.to_thread(archive.writestr, name, content)
        await response.write(sink.take())
    archive.close()
    await response.write(sink.take())
    await response.write_eof()
    return response


def _entry_name(index: int, image: dict[str, Any]) -> str:
    """The webui's own file naming: number, then seed (or digest)."""
    extension = (image.get("content_type") or "image/png").rpartition("/")[2]
    seed = image.get("seed")
    label = str(seed) if seed is not None else image["digest"][:16]
    return f"{index:05d}-{label}.{extension}"
