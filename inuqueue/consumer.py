"""The consumer: one coroutine per webui, one generation in flight at a time."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import orjson
import structlog

from inuqueue.checkpoints import CheckpointUnknown, resolve, set_override
from inuqueue.config import Config
from inuqueue.errors import ImageDecodeError, InuqueueError, JournalError, StoreError
from inuqueue.ingest import AnswerMalformed, IngestedAnswer, ingest_answer
from inuqueue.queue import TaskQueue
from inuqueue.state import Task
from inuqueue.store import ImageStore, decode_image_input, sniff_content_type
from inuqueue.upstream import AUTH_HINT, Upstream, describe_error

log = structlog.get_logger("inuqueue.consumer")

# Reads from the webui's answer; big enough to keep the thread hops per MB few.
READ_CHUNK_BYTES = 256 * 1024
# Answers that say "not now" rather than anything about the task.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# An error answer is kept on the task; a runaway one is cut to this.
MAX_ERROR_BODY_BYTES = 64 * 1024


class WebuiBusy(InuqueueError):
    """The webui (or a proxy before it) asked to come back later."""


class Consumer:
    """Takes the next task, sends it to the webui, and stores what comes back."""

    def __init__(
        self, queue: TaskQueue, store: ImageStore, upstream: Upstream, config: Config
    ) -> None:
        self.queue = queue
        self.store = store
        self.upstream = upstream
        self.config = config
        self.current: Task | None = None
        # Set when the daemon stops: finish the running task, start no other.
        self.stopping = False
        self.idle = asyncio.Event()
        self.idle.set()
        # The running task's latest progress and live preview (never journaled).
        self.progress: dict[str, dict[str, Any]] = {}
        self.previews: dict[str, tuple[bytes, str]] = {}

    async def run(self) -> None:
        """Run tasks until cancelled."""
        backoff_s = self.config.retry_initial_s
        started: Task | None = None
        while True:
            task = started
            if task is None:
                await self.queue.wait_next()
                if self.stopping:
                    return
                if not await self._upstream_ready():
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, self.config.retry_max_s)
                    continue
                backoff_s = self.config.retry_initial_s
                # Asked again after the await: the task may have been cancelled
                # or moved, or the queue paused, while the webui was probed.
                paused = self.queue.state.paused
                task = None if paused else self.queue.state.next_pending()
                if task is None:
                    continue
            started = None

            self.idle.clear()
            self.current = task
            refused = False
            try:
                started = await self._run_task(task)
            except (JournalError, StoreError, WebuiBusy):
                # The disk refuses writes, or the webui asks for patience: the
                # task is what the journal last said; nothing starts for a while.
                refused = True
            except Exception:
                # A fault of inuqueue's own must not stop the queue for good: the
                # task counts a broken attempt, so a task that keeps hitting it
                # ends failed.
                log.exception("consumer.failed", task_id=task.task_id)
                if task.status == "running" and not self.queue.journal.failure:
                    await self.queue.mark_broken(task, "inuqueue failed on it")
                refused = True
            finally:
                self.current = None
                self.idle.set()
            if refused:
                await asyncio.sleep(self.config.storage_retry_s)

    async def _upstream_ready(self) -> bool:
        if self.upstream.reachable is not False:
            return True
        return await self.upstream.probe()

    async def _run_task(self, task: Task) -> Task | None:
        """Run one task; returns the next one if it was started on the way."""
        if task.status != "running":
            try:
                await self.queue.mark_started(task)
            except asyncio.CancelledError:
                if task.status == "running":
                    self.queue.release(task, "the daemon stopped")
                raise
        poller = asyncio.create_task(self._poll_progress(task), name="progress")
        try:
            return await self._generate(task)
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            self.progress.pop(task.task_id, None)
            self.previews.pop(task.task_id, None)
            self.queue.events.set_progress(task.task_id, None)

    async def _generate(self, task: Task) -> Task | None:
        overrides: dict[str, str] = {}
        if task.checkpoint is not None or task.vae is not None:
            try:
                overrides = await resolve(self.upstream, task.checkpoint, task.vae)
            except CheckpointUnknown as exc:
                reason = f"unknown_{exc.kind.lower()}"
                error = {"reason": reason, "message": str(exc)}
                await self.queue.mark_finished(task, "failed", error=error)
                return None
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.upstream.mark(False, describe_error(exc))
                record = self.queue.release(task, "the webui is unreachable")
                await self.queue.journal.wait_durable(record["seq"])
                return None
        try:
            body = await self._build_body(task, overrides)
        except ImageDecodeError as exc:
            error = {"reason": "input_missing", "message": str(exc)}
            await self.queue.mark_finished(task, "failed", error=error)
            return None

        url = f"{self.upstream.url}/sdapi/v1/{task.type}"
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        try:
            async with self.upstream.generation.post(
                url, data=body, headers=headers
            ) as response:
                self.upstream.mark(True)
                if response.status == 401:
                    # Every task would fail alike: the webui wants credentials.
                    self.upstream.mark(False, AUTH_HINT)
                    record = self.queue.release(task, AUTH_HINT)
                    await self.queue.journal.wait_durable(record["seq"])
                    raise WebuiBusy(AUTH_HINT)
                if response.status in TRANSIENT_STATUSES:
                    # A proxy in front of the webui, or a webui still loading:
                    # not an answer about the task. It waits, attempt given back.
                    record = self.queue.release(
                        task, f"the webui answered {response.status}; trying later"
                    )
                    await self.queue.journal.wait_durable(record["seq"])
                    raise WebuiBusy(f"the webui answered {response.status}")
                if response.status != 200:
                    error = await _error_from(response)
                    await self.queue.mark_finished(task, "failed", error=error)
                    return None
                answer = await ingest_answer(
                    response.content.iter_chunked(READ_CHUNK_BYTES), self.store
                )
        except aiohttp.ClientConnectorError as exc:
            self.upstream.mark(False, describe_error(exc))
            record = self.queue.release(task, "the webui is unreachable")
            await self.queue.journal.wait_durable(record["seq"])
            return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            if task.interrupt_requested:
                await self.queue.mark_finished(task, "interrupted")
                return None
            # The webui took the request and broke off: a crash or a restart.
            await self.queue.mark_broken(task, describe_error(exc))
            return None
        except (AnswerMalformed, ImageDecodeError) as exc:
            error = {
                "reason": "bad_answer",
                "message": f"The webui's answer could not be read: {exc}",
            }
            await self.queue.mark_finished(task, "failed", error=error)
            return None
        except asyncio.CancelledError:
            # The daemon is stopping; the journal's close writes this record.
            self.queue.release(task, "the daemon stopped")
            raise
        except OSError as exc:
            # The store could not take the images (a full disk): not the task's
            # fault. It waits, its attempt given back, until the disk has room.
            log.warning("store.write_failed", task_id=task.task_id, error=str(exc))
            record = self.queue.release(task, f"the image store failed: {exc}")
            await self.queue.journal.wait_durable(record["seq"])
            raise StoreError(f"storing images failed: {exc}") from exc

        return await self._finish(task, answer)

    async def interrupt(self, task: Task) -> None:
        """Stop the running task at the webui, if it is the webui's current job."""
        if self.current is not task or task.status != "running":
            return
        if not await self._is_current_job(task):
            # The webui has not begun it (a UI job runs first): the next progress
            # poll tries again, since an interrupt sent now would hit that job.
            return
        try:
            async with self.upstream.control.post(
                self.upstream.url + "/sdapi/v1/interrupt"
            ) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("task.interrupt_failed", task_id=task.task_id, error=str(exc))

    async def _is_current_job(self, task: Task) -> bool:
        """Whether the webui is running this very task now."""
        body = {"id_task": task.task_id, "id_live_preview": -1, "live_preview": False}
        try:
            async with self.upstream.control.post(
                self.upstream.url + "/internal/progress",
                json=body,
            ) as response:
                if response.status == 200:
                    answer = await response.json(content_type=None)
                    return bool(answer.get("active"))
            # No /internal routes (--nowebui, some forks): trust a running job.
            progress = await self._webui_progress()
            if progress is None:
                return False
            return bool(progress["state"].get("job_count", 0) != 0)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
            return False

    async def _webui_progress(self) -> dict[str, Any] | None:
        url = self.upstream.url + "/sdapi/v1/progress"
        async with self.upstream.control.get(url) as response:
            if response.status != 200:
                return None
            answer = await response.json(content_type=None)
        return answer if isinstance(answer, dict) else None

    async def _poll_progress(self, task: Task) -> None:
        """Follow the webui's progress while the task runs; stop it if asked."""
        while True:
            await asyncio.sleep(self.config.progress_interval_s)
            if task.interrupt_requested:
                await self.interrupt(task)
            try:
                answer = await self._webui_progress()
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
            if answer is None or task.status != "running":
                continue
            progress, preview = progress_from_webui(answer)
            if preview is not None:
                self.previews[task.task_id] = preview
                progress["preview_url"] = f"/inuqueue/v1/task/{task.task_id}/preview"
            self.progress[task.task_id] = progress
            self.queue.events.set_progress(task.task_id, progress)

    async def _finish(self, task: Task, answer: IngestedAnswer) -> Task | None:
        info = _parse_info(answer.members.get("info"))
        images = _describe_images(answer, info)
        # The webui answers an interrupted job with 200 and the images made so far.
        status = "interrupted" if task.interrupt_requested else "done"
        # The next task's start shares this fsync: one fewer between generations.
        return await self.queue.mark_finished(
            task, status, images=images, info=info, start_next=not self.stopping
        )

    async def _build_body(self, task: Task, overrides: dict[str, str]) -> bytes:
        """The webui body: the request as queued, its input images inlined."""
        body: dict[str, Any] = dict(task.request)
        for option, value in overrides.items():
            set_override(body, option, value)
        body["force_task_id"] = task.task_id
        # The queue exists so that images are not lost; it always takes them back.
        body["send_images"] = True
        if task.type == "img2img":
            inits = body.get("init_images") or []
            body["init_images"] = [await self._inline(item) for item in inits]
            if body.get("mask") is not None:
                body["mask"] = await self._inline(body["mask"])
        return orjson.dumps(body)

    async def _inline(self, item: Any) -> Any:
        if not isinstance(item, dict) or "digest" not in item:
            return item
        try:
            data = await self.store.read_verified(item["digest"])
        except (OSError, StoreError) as exc:
            raise ImageDecodeError(f"input image {item['digest']}: {exc}") from exc
        return base64.b64encode(data).decode("ascii")


def progress_from_webui(
    answer: dict[str, Any],
) -> tuple[dict[str, Any], tuple[bytes, str] | None]:
    """inuqueue's progress from the webui's /progress answer, and its preview."""
    state = answer.get("state") or {}
    progress = {
        "fraction": min(max(float(answer.get("progress") or 0.0), 0.0), 1.0),
        "eta_s": round(float(answer.get("eta_relative") or 0.0), 2),
        "step": state.get("sampling_step"),
        "steps": state.get("sampling_steps"),
        "job_no": state.get("job_no"),
        "job_count": state.get("job_count"),
    }
    preview = None
    current = answer.get("current_image")
    if isinstance(current, str) and current:
        try:
            data = decode_image_input(current)
        except ImageDecodeError:
            data = b""
        content_type = sniff_content_type(data[:16])
        if content_type is not None:
            preview = (data, content_type)
    return progress, preview


def _parse_info(raw: Any) -> Any:
    """The webui sends info as a JSON string; keep it parsed when it parses."""
    if not isinstance(raw, str):
        return raw
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def _describe_images(answer: IngestedAnswer, info: Any) -> list[dict[str, Any]]:
    """Each stored image with the infotext and seed the webui reported for it."""
    info_map = info if isinstance(info, dict) else {}
    infotexts = info_map.get("infotexts") or []
    seeds = info_map.get("all_seeds") or []
    # With a grid, the grid comes first and the seeds start at the next image.
    first = info_map.get("index_of_first_image") or 0
    described = []
    for index, image in enumerate(answer.images):
        seed_index = index - first
        described.append(
            {
                "digest": image.digest,
                "content_type": image.content_type,
                "bytes": image.bytes,
                "infotext": infotexts[index] if index < len(infotexts) else None,
                "seed": seeds[seed_index] if 0 <= seed_index < len(seeds) else None,
            }
        )
    return described


async def _error_from(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """What the webui said when it refused a generation."""
    raw = await response.content.read(MAX_ERROR_BODY_BYTES)
    body: Any
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw.decode("utf-8", "replace")

    message = f"The webui answered {response.status}."
    if response.status == 404 and body == {"detail": "Not Found"}:
        message += " Start the webui with --api so that /sdapi/v1 exists."
    elif isinstance(body, dict) and (body.get("errors") or body.get("detail")):
        message += f" It said: {body.get('errors') or body.get('detail')}"
    return {
        "reason": "webui_error",
        "status": response.status,
        "body": body,
        "message": message,
    }
