"""The routes that take no generation work: progress, options, lists, png-info."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from inuqueue.standin.catalog import (
    CHECKPOINT_ALIASES,
    CHECKPOINTS,
    EMBEDDINGS,
    FACE_RESTORERS,
    LATENT_UPSCALE_MODES,
    LORAS,
    REALESRGAN_MODELS,
    SAMPLERS,
    SCHEDULERS,
    UPSCALERS,
    VAES,
)
from inuqueue.standin.images import read_png_text
from inuqueue.standin.infotext import parse_infotext
from inuqueue.standin.options import (
    OPTION_DEFAULTS,
    RESTRICTED_API_OPTIONS,
    cmd_flags,
    memory_report,
    options_response,
)
from inuqueue.standin.routes_generate import decode_input
from inuqueue.standin.scripts import SCRIPTS
from inuqueue.standin.state import STANDIN, Standin
from inuqueue.standin.styles import PROMPT_STYLES
from inuqueue.standin.webhttp import (
    RequestInvalid,
    WebuiFailure,
    check_basic_auth,
    json_response,
    read_body,
)
from inuqueue.webui_schema import FieldSpec, validate_fields

# Settings whose change reloads weights, which the webui does holding queue_lock.
_LOCKING_OPTIONS = frozenset({"sd_model_checkpoint", "sd_vae"})

_PROGRESS_QUERY = FieldSpec("bool", False, nullable=False)
_INTERNAL_PROGRESS_FIELDS = {
    "id_task": FieldSpec("str"),
    "id_live_preview": FieldSpec("int", -1, nullable=False),
    "live_preview": FieldSpec("bool", True, nullable=False),
}
_PNG_INFO_FIELDS = {"image": FieldSpec("str", nullable=False, required=True)}
# Linux reports ru_maxrss in KiB (macOS in bytes; the stand-in's figure is a
# plausible number, not a measurement anyone relies on).
_RSS_UNIT_BYTES = 1024

_ROOT_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Stable Diffusion</title></head>
<body><gradio-app>Stable Diffusion web UI</gradio-app></body>
</html>
"""


def _guarded(request: web.Request) -> Standin:
    standin = request.app[STANDIN]
    check_basic_auth(request, standin.credentials)
    return standin


async def root_page(request: web.Request) -> web.StreamResponse:
    """GET /: the UI's page (here a placeholder, but a page, not an error)."""
    return web.Response(text=_ROOT_PAGE, content_type="text/html")


async def progress(request: web.Request) -> web.StreamResponse:
    """GET /sdapi/v1/progress?skip_current_image=."""
    standin = _guarded(request)
    raw = request.query.get("skip_current_image")
    skip, errors = (False, []) if raw is None else _PROGRESS_QUERY.coerce(raw, ())
    if errors:
        raise RequestInvalid(
            [error | {"loc": ["query", "skip_current_image"]} for error in errors]
        )
    state = standin.state
    return json_response(
        state.progress_response(standin.options, skip_current_image=skip)
    )


async def interrupt(request: web.Request) -> web.StreamResponse:
    """POST /sdapi/v1/interrupt: {}."""
    _guarded(request).interrupt()
    return json_response({})


async def skip(request: web.Request) -> web.StreamResponse:
    """POST /sdapi/v1/skip: null."""
    _guarded(request).skip()
    return json_response(None)


async def get_options(request: web.Request) -> web.StreamResponse:
    """GET /sdapi/v1/options, typed by the webui's OptionsModel."""
    return json_response(options_response(_guarded(request).options))


async def set_options(request: web.Request) -> web.StreamResponse:
    """POST /sdapi/v1/options: applied key by key, as opts.set does."""
    body = await read_body(request)
    standin = _guarded(request)
    if body is None:
        raise RequestInvalid(
            [{"loc": ["body"], "msg": "field required", "type": "value_error.missing"}]
        )
    changes, errors = FieldSpec("dict[str, Any]", nullable=False).coerce(
        body, ("body",)
    )
    if errors:
        raise RequestInvalid(errors)
    checkpoint = changes.get("sd_model_checkpoint")
    if checkpoint is not None and checkpoint not in CHECKPOINT_ALIASES:
        raise WebuiFailure("RuntimeError", f"model {checkpoint!r} not found")
    for key, value in changes.items():
        await _set_option(standin, key, value)
    return json_response(None)


async def _set_option(standin: Standin, key: str, value: Any) -> None:
    options = standin.options
    if options.get(key) == value:
        return
    if key not in OPTION_DEFAULTS:
        raise KeyError(key)  # earlier keys stay applied, as upstream
    if key in RESTRICTED_API_OPTIONS:
        return
    options[key] = value
    if key not in _LOCKING_OPTIONS:
        return
    async with standin.queue_lock:  # waits for the running generation
        if key == "sd_model_checkpoint":
            checkpoint = CHECKPOINT_ALIASES[value]
            options["sd_model_checkpoint"] = checkpoint.title
            options["sd_checkpoint_hash"] = checkpoint.sha256


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _list_route(make: Callable[[Standin], object]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        standin = _guarded(request)
        return json_response(make(standin))

    return handler


LIST_ROUTES: dict[str, Handler] = {
    "samplers": _list_route(lambda _s: [s.as_json() for s in SAMPLERS]),
    "schedulers": _list_route(lambda _s: [s.as_json() for s in SCHEDULERS]),
    "upscalers": _list_route(lambda _s: list(UPSCALERS)),
    "latent-upscale-modes": _list_route(
        lambda _s: [{"name": m} for m in LATENT_UPSCALE_MODES]
    ),
    "sd-models": _list_route(lambda _s: [c.as_json() for c in CHECKPOINTS]),
    "sd-vae": _list_route(lambda _s: [dict(vae) for vae in VAES]),
    "hypernetworks": _list_route(lambda _s: []),
    "face-restorers": _list_route(lambda _s: list(FACE_RESTORERS)),
    "realesrgan-models": _list_route(lambda _s: list(REALESRGAN_MODELS)),
    "prompt-styles": _list_route(lambda _s: [s.as_json() for s in PROMPT_STYLES]),
    "embeddings": _list_route(lambda _s: EMBEDDINGS),
    "cmd-flags": _list_route(lambda s: cmd_flags(s.config.api_auth)),
    "memory": _list_route(lambda _s: _memory()),
    "scripts": _list_route(
        lambda _s: {
            kind: [s.title.lower() for s in scripts]
            for kind, scripts in SCRIPTS.items()
        }
    ),
    "script-info": _list_route(
        lambda _s: [
            script.info(is_img2img=kind == "img2img")
            for kind, scripts in SCRIPTS.items()
            for script in scripts
        ]
    ),
    "extensions": _list_route(lambda _s: []),
}


def _memory() -> dict[str, Any]:
    if sys.platform == "win32":
        # Neither getrusage nor sysconf exists there; the shape is what matters.
        return memory_report(0, 0)
    import resource

    rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT_BYTES
    total_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return memory_report(rss_bytes, total_bytes)


async def refresh_locked(request: web.Request) -> web.StreamResponse:
    """POST refresh-embeddings/-checkpoints/-vae: null, after the queue lock."""
    standin = _guarded(request)
    async with standin.queue_lock:
        pass  # nothing to rescan; only the wait for the lock is observable
    return json_response(None)


async def checkpoint_noop(request: web.Request) -> web.StreamResponse:
    """POST unload-checkpoint / reload-checkpoint: {}."""
    _guarded(request)
    return json_response({})


async def loras(request: web.Request) -> web.StreamResponse:
    """GET /sdapi/v1/loras (the Lora extension's route: no --api-auth)."""
    return json_response(list(LORAS))


async def refresh_loras(request: web.Request) -> web.StreamResponse:
    """POST /sdapi/v1/refresh-loras: null."""
    return json_response(None)


async def png_info(request: web.Request) -> web.StreamResponse:
    """POST /sdapi/v1/png-info: the infotext of a picture, raw and parsed."""
    body = await read_body(request)
    standin = _guarded(request)
    result = validate_fields(_PNG_INFO_FIELDS, body)
    if result.errors:
        raise RequestInvalid(result.errors)
    image = await decode_input(standin, result.values["image"].strip())
    items = (
        await asyncio.to_thread(read_png_text, image.data)
        if image.format == "PNG"
        else {}
    )
    info = items.pop("parameters", "")
    return json_response(
        {"info": info, "items": items, "parameters": parse_infotext(info)}
    )


async def internal_ping(request: web.Request) -> web.StreamResponse:
    """GET /internal/ping: {}."""
    return json_response({})


async def internal_pending_tasks(request: web.Request) -> web.StreamResponse:
    """GET /internal/pending-tasks."""
    return json_response(request.app[STANDIN].tasks.pending_response())


async def internal_progress(request: web.Request) -> web.StreamResponse:
    """POST /internal/progress for one task id."""
    standin = request.app[STANDIN]
    result = validate_fields(_INTERNAL_PROGRESS_FIELDS, await read_body(request))
    if result.errors:
        raise RequestInvalid(result.errors)
    reply = standin.tasks.progress_response(
        result.values, standin.state, standin.options
    )
    return json_response(reply)
