"""inuqueue's own routes under /inuqueue/v1."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from inuqueue.checkpoints import CheckpointUnknown, resolve, set_override
from inuqueue.errors import ImageDecodeError, StoreError
from inuqueue.http import API_PREFIX, ApiError, json_response
from inuqueue.queue import Enqueued
from inuqueue.runtime import RUNTIME, Runtime
from inuqueue.state import CallbackFormat, Task, TaskType
from inuqueue.store import (
    DIGEST_RE,
    ImageStore,
    decode_image_input,
    sniff_content_type,
)
from inuqueue.views import image_view, task_url, task_view
from inuqueue.webhooks import NATIVE
from inuqueue.webui_schema import request_errors

routes = web.RouteTableDef()

# Pages stay small enough to build and send in a few milliseconds.
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
# Long enough for a UUID or a hash, short enough to keep the journal lean.
MAX_IDEMPOTENCY_KEY_CHARS = 200
# The Agent Scheduler kept callback URLs in a VARCHAR(255); browsers take 2 KiB.
MAX_CALLBACK_URL_CHARS = 2048
# The checkpoint name that means "no override" to the Agent Scheduler.
SYSTEM_CHECKPOINT = "system"
# A year: an image never changes under its digest.
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"


def runtime_of(request: web.Request) -> Runtime:
    """The daemon's live parts, for a route."""
    return request.app[RUNTIME]


@routes.post(API_PREFIX + "/queue/txt2img")
async def enqueue_txt2img(request: web.Request) -> web.Response:
    """Queue a txt2img request; answers as soon as the task is durable."""
    return await _enqueue(request, "txt2img")


@routes.post(API_PREFIX + "/queue/img2img")
async def enqueue_img2img(request: web.Request) -> web.Response:
    """Queue an img2img request; its input images go into the store first."""
    return await _enqueue(request, "img2img")


async def _enqueue(request: web.Request, kind: TaskType) -> web.Response:
    body = await read_json_object(request)
    enqueued = await enqueue_body(
        runtime_of(request), kind, body, idempotency_key(request), NATIVE
    )
    task_id = enqueued.task.task_id
    payload = {
        "task_id": task_id,
        "status": enqueued.status,
        "position": enqueued.position,
    }
    return json_response(
        payload,
        status=202 if enqueued.created else 200,
        headers={"Location": task_url(task_id)},
    )


async def enqueue_body(
    runtime: Runtime,
    kind: TaskType,
    body: dict[str, Any],
    key: str | None,
    callback_format: CallbackFormat,
) -> Enqueued:
    """Queue a webui body with inuqueue's own fields in it; ApiError if it is bad."""
    name = _pop_typed(body, "name", str)
    priority = _pop_typed(body, "priority", int)
    # An empty name is a form's "no choice": no override, not a match of any title.
    checkpoint = _pop_typed(body, "checkpoint", str) or None
    vae = _pop_typed(body, "vae", str) or None
    callback_url = check_callback_url(_pop_typed(body, "callback_url", str))
    _check_webui_fields(kind, body)

    pending_names = await apply_models(runtime, body, checkpoint, vae)
    if kind == "img2img":
        await store_inputs(body, runtime.store)

    return await runtime.queue.enqueue(
        kind,
        body,
        name=name,
        priority=priority or 0,
        idempotency_key=key,
        checkpoint=pending_names[0],
        vae=pending_names[1],
        callback_url=callback_url,
        callback_format=callback_format,
    )


def check_callback_url(url: str | None) -> str | None:
    """A callback URL inuqueue can POST to, or a 422 that says what is wrong."""
    if url is None or url == "":
        return None
    try:
        parsed = URL(url)
    except ValueError:
        parsed = None
    if (
        parsed is None
        or parsed.scheme not in ("http", "https")
        or not parsed.host
        or len(url) > MAX_CALLBACK_URL_CHARS
        # Spaces and control characters have no place in a URL as sent.
        or any(char <= " " or char == "\x7f" for char in url)
    ):
        raise ApiError(
            422,
            "invalid_callback_url",
            f"callback_url must be an absolute http:// or https:// URL of at most "
            f"{MAX_CALLBACK_URL_CHARS} characters, such as "
            "http://127.0.0.1:8000/hook.",
            field="callback_url",
        )
    return url


async def apply_models(
    runtime: Runtime, body: dict[str, Any], checkpoint: str | None, vae: str | None
) -> tuple[str | None, str | None]:
    """Write the overrides the names mean into the body; the names still to be
    resolved when the task starts (the webui could not be asked now)."""
    if checkpoint is not None and checkpoint.strip().lower() == SYSTEM_CHECKPOINT:
        # "Whatever model the webui has loaded", as the Agent Scheduler reads it.
        settings = dict(body.get("override_settings") or {})
        settings.pop("sd_model_checkpoint", None)
        body["override_settings"] = settings
        checkpoint = None
    overrides = await _resolve_models(runtime, checkpoint, vae)
    if overrides is None:
        return checkpoint, vae
    for option, value in overrides.items():
        set_override(body, option, value)
    return None, None


async def _resolve_models(
    runtime: Runtime, checkpoint: str | None, vae: str | None
) -> dict[str, str] | None:
    """The overrides the names mean; None if the webui cannot be asked; 422s."""
    if checkpoint is None and vae is None:
        return {}
    try:
        return await resolve(runtime.upstream, checkpoint, vae)
    except CheckpointUnknown as exc:
        raise ApiError(
            422,
            f"unknown_{exc.kind.lower()}",
            str(exc),
            field=exc.kind.lower(),
            close_matches=exc.close,
        ) from None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong."""
    limit = runtime_of(request).config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        # Refused on its Content-Length alone, before a byte of it is read.
        raise ApiError(
            413,
            "body_too_large",
            f"The body is {request.content_length} bytes, over the limit of {limit}; "
            "raise --max-body-bytes if it is meant to be this large.",
        )
    raw = await request.read()
    if not raw:
        raise ApiError(400, "invalid_json", "The body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            400,
            "invalid_json",
            f"The body is not valid JSON ({exc}); send a JSON object.",
        ) from None
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "invalid_json",
            f"The body is {_JSON_NAMES.get(type(body), 'not an object')}; send a "
            "JSON object.",
        )
    return body


def idempotency_key(request: web.Request) -> str | None:
    """The request's Idempotency-Key header, checked."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters.",
        )
    return key


_TYPE_NAMES = {str: "a string", int: "an integer"}
_JSON_NAMES = {
    float: "a number with a fraction (or too large)",
    type(None): "null",
    bool: "true/false",
    list: "a list",
    dict: "an object",
    str: "a string",
    int: "an integer",
}


def _pop_typed(body: dict[str, Any], field: str, kind: type) -> Any:
    """Take one of inuqueue's own fields out of the webui body, checking its type."""
    value = body.pop(field, None)
    if value is None:
        return None
    # bool is an int to Python, but "priority": true is a mistake, not a 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(
            422,
            "invalid_field",
            f"Field {field!r} must be {_TYPE_NAMES[kind]} or null, not "
            f"{_JSON_NAMES.get(type(value), type(value).__name__)}.",
            field=field,
        )
    return value


def _check_webui_fields(kind: TaskType, body: dict[str, Any]) -> None:
    """Refuse a body the webui would refuse with a 422, before it is queued."""
    errors = request_errors(kind, body)
    if not errors:
        return

    fields = [".".join(str(part) for part in e["loc"][1:]) for e in errors]
    described = "; ".join(
        f"{field or 'body'}: {error['msg']}"
        for field, error in zip(fields, errors, strict=True)
    )
    raise ApiError(
        422,
        "invalid_field",
        f"The webui would refuse this {kind} request ({described}). Fix the "
        "field's type and send it again.",
        field=fields[0],
        detail=errors,
    )


async def store_inputs(body: dict[str, Any], store: ImageStore) -> None:
    """Move img2img input images into the store; the body keeps their digests."""
    inits = body.get("init_images")
    if not isinstance(inits, list) or not inits:
        raise ApiError(
            422,
            "invalid_field",
            "img2img needs init_images: a list of at least one base64 image "
            "(raw or a data:image/ URI).",
            field="init_images",
        )
    body["init_images"] = [
        await store_input(item, f"init_images[{index}]", store)
        for index, item in enumerate(inits)
    ]
    if body.get("mask"):
        body["mask"] = await store_input(body["mask"], "mask", store)


async def store_input(value: Any, field: str, store: ImageStore) -> Any:
    """One input image into the store: its digest in the body's place (a URL
    stays as it is); a 422 if it is no image."""
    if not isinstance(value, str):
        raise ApiError(
            422, "invalid_image", f"{field} must be a base64 string.", field=field
        )
    if value.startswith(("http://", "https://")):
        # The webui fetches URLs itself, under its own rules.
        return value
    try:
        data = await asyncio.to_thread(decode_image_input, value)
    except ImageDecodeError as exc:
        raise ApiError(
            422,
            "invalid_image",
            f"{field} is not an image: {exc}. Send base64 of a PNG, JPEG, WEBP "
            "or GIF file, raw or as a data:image/ URI, or an http(s) URL the webui "
            "can fetch; local file paths are not read.",
            field=field,
        ) from None
    stored = await store.put_bytes(data)
    return {"digest": stored.digest}


def page_params(request: web.Request) -> tuple[int, int]:
    """`offset` and `limit` from the query, checked."""
    values = []
    for name, default, maximum in (
        ("offset", 0, None),
        ("limit", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
    ):
        raw = request.query.get(name)
        if raw is None:
            values.append(default)
            continue
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0 or (maximum is not None and value > maximum):
            bound = f"0 to {maximum}" if maximum is not None else "0 or more"
            raise ApiError(
                400, "invalid_query", f"{name} must be a whole number, {bound}."
            )
        values.append(value)
    return values[0], values[1]


@routes.get(API_PREFIX + "/queue")
async def get_queue(request: web.Request) -> web.Response:
    """What runs now and what waits, in the order it will run."""
    offset, limit = page_params(request)
    state = await runtime_of(request).queue.settled()
    return json_response(
        {
            "paused": state.paused,
            "running": [view_of(request, t) for t in state.running.values()],
            "pending": [view_of(request, t) for t in state.pending_page(offset, limit)],
            "total_pending": len(state.pending),
        }
    )


def view_of(request: web.Request, task: Task, *, with_request: bool = False) -> Any:
    """A task's JSON view, with its live progress when it runs."""
    runtime = runtime_of(request)
    progress = runtime.consumer.progress if runtime.consumer else {}
    return task_view(task, runtime.queue.state, progress, with_request=with_request)


async def task_of(request: web.Request) -> Task:
    """The task the path names, once durable; 404 if there is none."""
    task_id = request.match_info["task_id"]
    state = await runtime_of(request).queue.settled()
    task = state.tasks.get(task_id)
    if task is None:
        raise ApiError(
            404,
            "task_not_found",
            f"There is no task {task_id!r}; GET {API_PREFIX}/queue lists the "
            "queued ones.",
        )
    return task


@routes.get(API_PREFIX + "/task/{task_id}")
async def get_task(request: web.Request) -> web.Response:
    """One task with everything known of it."""
    task = await task_of(request)
    return json_response(view_of(request, task, with_request=True))


@routes.get(API_PREFIX + "/task/{task_id}/results")
async def get_results(request: web.Request) -> web.Response:
    """A task's images with their infotexts and seeds; ?inline=base64 adds bytes."""
    task = await task_of(request)
    inline = request.query.get("inline")
    if inline not in (None, "base64"):
        raise ApiError(400, "invalid_query", "inline takes one value: base64.")

    store = runtime_of(request).store
    images = []
    for image in task.images:
        view = image_view(image, detailed=True)
        if inline == "base64":
            data = await _read_image(store, image["digest"])
            view["base64"] = await asyncio.to_thread(_b64, data)
        images.append(view)
    return json_response(
        {
            "task_id": task.task_id,
            "status": task.status,
            "images": images,
            "info": task.info,
        }
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def _read_image(store: ImageStore, digest: str) -> bytes:
    try:
        return await store.read_verified(digest)
    except FileNotFoundError:
        raise ApiError(
            404, "image_not_found", f"No image {digest} is stored."
        ) from None
    except StoreError as exc:
        raise ApiError(
            500,
            "image_damaged",
            f"{exc}. It is not served: run 'inuqueue store verify' to set damaged "
            "images aside, and requeue the task to make it anew.",
        ) from None


@routes.get(API_PREFIX + "/images/{digest}")
async def get_image(request: web.Request) -> web.Response:
    """An image's bytes, cacheable forever under its digest."""
    digest = request.match_info["digest"]
    if not DIGEST_RE.fullmatch(digest):
        raise ApiError(
            400,
            "invalid_digest",
            "An image is named by its SHA-256: 64 lowercase hex digits.",
        )

    etag = f'"{digest}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE_CACHE}
    tags = _etags(request.headers.get("If-None-Match", ""))
    matches = etag in tags or "*" in tags
    if matches and runtime_of(request).store.exists(digest):
        return web.Response(status=304, headers=headers)

    data = await _read_image(runtime_of(request).store, digest)
    content_type = sniff_content_type(data[:16]) or "application/octet-stream"
    return web.Response(body=data, headers=headers, content_type=content_type)


def _etags(header: str) -> set[str]:
    tags = {part.strip() for part in header.split(",")}
    return {tag.removeprefix("W/") for tag in tags if tag}


@routes.get(API_PREFIX + "/task/{task_id}/preview")
async def get_preview(request: web.Request) -> web.Response:
    """The webui's live preview of a running task, when it has one."""
    task = await task_of(request)
    consumer = runtime_of(request).consumer
    preview = consumer.previews.get(task.task_id) if consumer else None
    if preview is None:
        raise ApiError(
            404,
            "no_preview",
            "The webui has no live preview of this task (it shows one only while a "
            "task runs, every few steps, with live previews on).",
        )
    data, content_type = preview
    return web.Response(
        body=data, content_type=content_type, headers={"Cache-Control": "no-store"}
    )


@routes.get(API_PREFIX + "/health")
async def get_health(request: web.Request) -> web.Response:
    """Whether the daemon, its journal and the webui are in working order."""
    runtime = runtime_of(request)
    reachable = await runtime.upstream.reachable_now()
    state = await runtime.queue.settled()
    journal = runtime.queue.journal
    healthy = reachable and journal.failure is None
    return json_response(
        {
            "status": "ok" if healthy else "degraded",
            "upstream": {
                "url": runtime.upstream.url,
                "reachable": reachable,
                "error": None if reachable else runtime.upstream.last_error,
            },
            "queue": {"pending": len(state.pending), "running": len(state.running)},
            "journal": {
                "records": journal.records,
                "bytes": journal.bytes,
                "error": str(journal.failure) if journal.failure else None,
            },
        }
    )
