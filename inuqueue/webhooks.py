"""Callbacks: a finished task's outcome POSTed to its `callback_url`, at least once.

A delivery is owed from the journal record that made the task final. Every try is
journaled too (a `deliver` record with its outcome), so a daemon that stops with a
delivery owed tries it again after the restart, and the task shows how each try went.
The deliverer runs beside the consumer, never in its way: a receiver that hangs only
holds one of a few delivery slots.

Tries that may succeed later (no connection, a timeout, 5xx, 408, 429) are repeated
with a doubling back-off until `webhook_retry_for_s` after the task finished; any other
answer below 200 or from 300 up is the receiver refusing it, which a retry will not
change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import aiohttp
import orjson
import structlog
from yarl import URL

from inuqueue import __version__
from inuqueue.config import Config
from inuqueue.errors import JournalError, StoreError
from inuqueue.queue import TaskQueue
from inuqueue.state import CallbackFormat, Task
from inuqueue.store import ImageStore
from inuqueue.upstream import describe_error
from inuqueue.views import image_url

log = structlog.get_logger("inuqueue.webhooks")

NATIVE: CallbackFormat = "native"
AGENT_SCHEDULER: CallbackFormat = "agent-scheduler"
# Answers that say "try again later" rather than "no".
RETRIED_STATUSES = frozenset({408, 429})
SIGNATURE_HEADER = "X-Inuqueue-Signature"
TIMESTAMP_HEADER = "X-Inuqueue-Timestamp"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 of "<timestamp>." and the body.

    The timestamp is signed with the body, so a captured delivery cannot be
    replayed later under a fresh timestamp.
    """
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return "sha256=" + mac.hexdigest()


def _epoch_s(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _iso(epoch_s: float) -> str:
    moment = datetime.fromtimestamp(epoch_s, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def native_payload(task: Task, base_url: str) -> bytes:
    """The JSON body a task queued through inuqueue's own API is reported with."""
    return orjson.dumps(
        {
            "task_id": task.task_id,
            "status": task.status,
            "type": task.type,
            "name": task.name,
            "images": [
                {
                    "digest": image["digest"],
                    "url": base_url + image_url(image["digest"]),
                }
                for image in task.images
            ],
            "info": task.info,
            "error": task.error,
        }
    )


def multipart_body(
    fields: dict[str, str], files: list[tuple[str, str, bytes]]
) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type.

    Built as bytes rather than streamed, because a signature covers the exact body.
    """
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
            f"\r\n\r\n{value}\r\n".encode()
        )
    for filename, content_type, data in files:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
        )
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class Deliverer:
    """Delivers every owed callback, a few at a time, retrying with back-off."""

    def __init__(
        self,
        queue: TaskQueue,
        store: ImageStore,
        config: Config,
        base_url: Callable[[], str],
    ) -> None:
        self.queue = queue
        self.store = store
        self.config = config
        # Image URLs in payloads start with it; asked each time, because the
        # port is known only once the daemon listens.
        self.base_url = base_url
        self._in_flight: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        # Tries made whose record the journal refused (a full disk): recorded
        # once it takes writes again, instead of being made again and again.
        self._unrecorded: dict[str, tuple[dict[str, Any], str | None]] = {}

    async def run(self) -> None:
        """Deliver until cancelled; owed deliveries are found in the queue's state."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.webhook_timeout_s),
            headers={"User-Agent": f"inuqueue/{__version__}"},
            # A receiver's cookies are not inuqueue's business.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        workers: set[asyncio.Task[None]] = set()
        try:
            wake = self.queue.deliveries_changed
            while True:
                wake.clear()
                try:
                    wait_s = self._launch_due(workers)
                except Exception:
                    # A fault here must not end every delivery for good.
                    log.exception("callback.scheduling_failed")
                    wait_s = self.config.storage_retry_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait_s)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._session.close()

    def _launch_due(self, workers: set[asyncio.Task[None]]) -> float | None:
        """Start the deliveries that are due; seconds until the next one is."""
        if self.queue.journal.failure is not None:
            # A try could not be recorded: wait for the healer, not spin.
            return self.config.storage_retry_s

        now = time.time()
        soonest: float | None = None
        durable_seq = self.queue.journal.durable_seq
        for task in list(self.queue.state.deliveries.values()):
            if len(self._in_flight) >= self.config.webhook_concurrency:
                # The next free slot wakes the loop; nothing to time until then.
                return None
            if task.task_id in self._in_flight:
                continue
            if (task.finish_seq or 0) > durable_seq:
                # Its outcome is not on disk yet; the fsync wakes the loop.
                continue
            due = self._due_at(task)
            if due > now:
                soonest = due if soonest is None else min(soonest, due)
                continue
            self._in_flight.add(task.task_id)
            worker = asyncio.create_task(self._deliver(task), name="webhook")
            workers.add(worker)
            worker.add_done_callback(workers.discard)
        if soonest is None:
            return None
        return max(0.0, soonest - now)

    def _due_at(self, task: Task) -> float:
        """Epoch seconds when the next try is due (0: now)."""
        if task.task_id in self._unrecorded or not task.delivery_attempts:
            return 0.0
        retry_at = task.delivery_attempts[-1].get("retry_at")
        try:
            return _epoch_s(retry_at) if isinstance(retry_at, str) else 0.0
        except ValueError:
            # A hand-edited journal, say: try now, and the try sets a new time.
            return 0.0

    async def _deliver(self, task: Task) -> None:
        try:
            made = self._unrecorded.pop(task.task_id, None)
            attempt, outcome = made if made is not None else await self._try(task)
            try:
                await self.queue.record_delivery(task, attempt, outcome)
            except JournalError as exc:
                # The try was made; only its record is missing. It is recorded
                # once the journal takes writes, not made again meanwhile.
                self._unrecorded[task.task_id] = (attempt, outcome)
                log.warning("callback.unrecorded", task_id=task.task_id, error=str(exc))
        finally:
            self._in_flight.discard(task.task_id)
            # Recorded or not, the slot is free for the next due delivery.
            self.queue.deliveries_changed.set()

    async def _try(self, task: Task) -> tuple[dict[str, Any], str | None]:
        """POST the outcome once; the attempt's record and the final outcome."""
        assert self._session is not None and task.callback_url is not None
        started_s = time.time()
        started_mono = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            body, headers = await self._request(task)
            # encoded=True: the URL goes out exactly as the client wrote it.
            url = URL(task.callback_url, encoded=True)
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status_code = response.status
                # Only the status matters; the connection is not kept for a body.
                response.release()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            error = describe_error(exc)
        except Exception as exc:
            # A fault of inuqueue's own is recorded as a failed try, so that it
            # is retried with back-off instead of at once, again and again.
            log.exception("callback.crashed", task_id=task.task_id)
            error = describe_error(exc)

        outcome = _outcome(status_code)
        retry_at: str | None = None
        if outcome is None:
            delay_s = min(
                self.config.webhook_retry_initial_s * 2 ** min(task.delivery_tries, 30),
                self.config.webhook_retry_max_s,
            )
            deadline_s = _epoch_s(task.finished_at or _iso(started_s))
            deadline_s += self.config.webhook_retry_for_s
            if started_s >= deadline_s:
                outcome = "gave_up"
            else:
                # The last try comes at the end of the window, not a back-off short.
                retry_at = _iso(min(started_s + delay_s, deadline_s))
        attempt = {
            "at": _iso(started_s),
            "status_code": status_code,
            "error": error,
            "elapsed_ms": round((time.monotonic() - started_mono) * 1000),
            "retry_at": retry_at,
        }
        return attempt, outcome

    async def _request(self, task: Task) -> tuple[bytes, dict[str, str]]:
        """The body of one try and its headers, signed when there is a secret."""
        body, content_type = await self._body(task)
        headers = {
            "Content-Type": content_type,
            "X-Inuqueue-Task-Id": task.task_id,
            "X-Inuqueue-Attempt": str(task.delivery_tries + 1),
        }
        if self.config.webhook_secret is not None:
            timestamp = int(time.time())
            headers[TIMESTAMP_HEADER] = str(timestamp)
            headers[SIGNATURE_HEADER] = sign(
                self.config.webhook_secret, timestamp, body
            )
        return body, headers

    async def _body(self, task: Task) -> tuple[bytes, str]:
        if task.callback_format != AGENT_SCHEDULER:
            body = native_payload(task, self.base_url())
            return body, "application/json"

        files = []
        for image in task.images:
            try:
                data = await self.store.read_verified(image["digest"])
            except (OSError, StoreError) as exc:
                # The task's other images still go; the log says which is missing.
                log.warning(
                    "callback.image_unreadable",
                    task_id=task.task_id,
                    digest=image["digest"],
                    error=str(exc),
                )
                continue
            content_type = image.get("content_type") or "image/png"
            extension = content_type.rpartition("/")[2] or "png"
            files.append((f"{image['digest']}.{extension}", content_type, data))
        return multipart_body({"task_id": task.task_id, "status": task.status}, files)


def _outcome(status_code: int | None) -> str | None:
    """What an answer means: delivered, rejected, or None to try again."""
    if status_code is None:
        return None
    if 200 <= status_code < 300:
        return "delivered"
    if status_code >= 500 or status_code in RETRIED_STATUSES:
        return None
    return "rejected"
