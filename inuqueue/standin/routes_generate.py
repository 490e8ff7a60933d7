"""The routes that take the queue lock: txt2img, img2img, extras, interrogate."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import string
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from inuqueue.errors import ImageDecodeError
from inuqueue.standin.catalog import UPSCALER_NAMES
from inuqueue.standin.generation import Processed, run_job
from inuqueue.standin.images import (
    ImageHeader,
    ImageRequestRefused,
    decode_image_input,
    make_png,
)
from inuqueue.standin.infotext import apply_infotext
from inuqueue.standin.job import Job, prepare_job
from inuqueue.standin.outputs import (
    build_info,
    echoed_parameters,
    encode_pictures,
    encode_reply,
)
from inuqueue.standin.scripts import find_script
from inuqueue.standin.state import STANDIN, Standin
from inuqueue.standin.webhttp import (
    DroppingResponse,
    RequestInvalid,
    WebuiFailure,
    WebuiHTTPError,
    check_basic_auth,
    json_response,
    read_body,
)
from inuqueue.webui_schema import FieldSpec, Kind, validate_fields, validate_request

# Base64 inputs longer than this are decoded off the event loop.
DECODE_IN_THREAD_CHARS = 1_000_000
# create_task_id: 7 characters from A-Z0-9.
TASK_ID_ALPHABET = string.ascii_uppercase + string.digits
TASK_ID_LENGTH = 7


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _sent_keys(body: object) -> set[str]:
    """The keys a client actually sent (pydantic's fields_set), for infotext filling."""
    candidate: Any = body  # validation accepted it, so dict() does too
    return {str(key) for key in dict(candidate)}


def create_task_id(kind: str) -> str:
    """The default id of a request in /internal/progress: task(txt2img-ABC1234)."""
    suffix = "".join(random.choices(TASK_ID_ALPHABET, k=TASK_ID_LENGTH))
    return f"task({kind}-{suffix})"


def _decode(standin: Standin, encoding: object) -> ImageHeader:
    if not isinstance(encoding, str):
        # Upstream calls encoding.startswith() first; any non-string fails there.
        name = type(encoding).__name__
        raise AttributeError(f"'{name}' object has no attribute 'startswith'")
    try:
        return decode_image_input(
            encoding,
            allow_requests=bool(standin.options["api_enable_requests"]),
            forbid_local=bool(standin.options["api_forbid_local_requests"]),
        )
    except ImageRequestRefused as exc:
        raise WebuiHTTPError(500, exc.detail) from exc
    except ImageDecodeError as exc:
        raise WebuiHTTPError(500, "Invalid encoded image") from exc


async def decode_input(standin: Standin, encoding: object) -> ImageHeader:
    """Decode an image field; big ones in a worker thread."""
    if isinstance(encoding, str) and len(encoding) > DECODE_IN_THREAD_CHARS:
        return await asyncio.to_thread(_decode, standin, encoding)
    return _decode(standin, encoding)


def _selectable_script(kind: Kind, name: str | None) -> None:
    if name is None or name == "":
        return
    script = find_script(kind, name)
    if script is None or script.alwayson:
        raise WebuiHTTPError(422, f"Script '{name}' not found")


def _check_alwayson(kind: Kind, scripts: dict[str, Any]) -> None:
    for name, settings in scripts.items():
        if name is None or name == "":
            # get_script answers (None, None) here, which has no .alwayson.
            raise AttributeError("'tuple' object has no attribute 'alwayson'")
        script = find_script(kind, name)
        if script is None:
            raise WebuiHTTPError(422, f"Script '{name}' not found")
        if not script.alwayson:
            message = "Cannot have a selectable script in the always on scripts params"
            raise WebuiHTTPError(422, message)
        if not isinstance(settings, (dict, list, str)):
            kind_name = type(settings).__name__
            raise TypeError(f"argument of type '{kind_name}' is not iterable")


@dataclass
class _Admitted:
    """A generation request that passed every check made before the queue."""

    kind: Kind
    values: dict[str, Any]
    task_id: str
    init_images: list[Any] | None


async def _admit(request: web.Request, kind: Kind) -> _Admitted:
    """Parse, authenticate and check a request as the webui does before queueing."""
    standin = request.app[STANDIN]
    body = await read_body(request)
    if isinstance(body, dict):
        standin.requests.append((request.path, body))
    check_basic_auth(request, standin.credentials)
    result = validate_request(kind, body)
    if result.errors:
        raise RequestInvalid(result.errors)
    values = result.values

    task_id = values["force_task_id"] or create_task_id(kind)
    init_images: list[Any] | None = None
    if kind == "img2img":
        init_images = values["init_images"]
        if init_images is None:
            raise WebuiHTTPError(404, "Init image not found")
        # A bad mask fails here, before queueing; bad init images only later.
        if values["mask"]:
            await decode_input(standin, values["mask"])
    apply_infotext(kind, values, _sent_keys(body), standin.options)
    _selectable_script(kind, values["script_name"])
    _check_alwayson(kind, values["alwayson_scripts"])
    return _Admitted(kind, values, task_id, init_images)


async def _run_queued(
    standin: Standin, admitted: _Admitted
) -> tuple[Job, Processed, str]:
    """Wait for the queue lock, then run the job; returns it, its output and info."""
    standin.tasks.add(admitted.task_id)
    standin.mark_queued()
    async with standin.queue_lock:
        # Bad init images fail only now, holding the lock, and stay "pending".
        images = admitted.init_images or []
        decoded = [await decode_input(standin, item) for item in images]
        standin.state.begin(job=f"scripts_{admitted.kind}")
        standin.tasks.start(admitted.task_id)
        standin.mark_started()
        try:
            job = prepare_job(standin, admitted.kind, admitted.values, len(decoded))
            processed = await run_job(standin, job)
            info = build_info(job, processed, standin.state.job_timestamp)
            standin.tasks.finish(admitted.task_id)
        finally:
            standin.state.end()
            standin.mark_finished()
    return job, processed, info


async def _generate(request: web.Request, kind: Kind) -> web.StreamResponse:
    standin = request.app[STANDIN]
    admitted = await _admit(request, kind)
    job, processed, info = await _run_queued(standin, admitted)

    images: list[bytes] = []
    if admitted.values["send_images"]:
        noise = standin.config.noise_images
        images = await asyncio.to_thread(encode_pictures, job, processed, noise=noise)
    parameters = echoed_parameters(kind, admitted.values)
    payload = await asyncio.to_thread(encode_reply, images, parameters, info)
    after_bytes = standin.take_drop()
    if after_bytes is not None:
        return DroppingResponse(
            after_bytes=after_bytes, body=payload, content_type="application/json"
        )
    return web.Response(body=payload, content_type="application/json")


async def txt2img(request: web.Request) -> web.StreamResponse:
    """POST /sdapi/v1/txt2img."""
    return await _generate(request, "txt2img")


async def img2img(request: web.Request) -> web.StreamResponse:
    """POST /sdapi/v1/img2img."""
    return await _generate(request, "img2img")


def _unit(default: float) -> FieldSpec:
    return FieldSpec("float", default, nullable=False, ge=0, le=1)


EXTRAS_FIELDS: dict[str, FieldSpec] = {
    "resize_mode": FieldSpec("any", 0, nullable=False, choices=(0, 1)),
    "show_extras_results": FieldSpec("bool", True, nullable=False),
    "gfpgan_visibility": _unit(0),
    "codeformer_visibility": _unit(0),
    "codeformer_weight": _unit(0),
    "upscaling_resize": FieldSpec("float", 2, nullable=False, gt=0),
    "upscaling_resize_w": FieldSpec("int", 512, nullable=False, ge=1),
    "upscaling_resize_h": FieldSpec("int", 512, nullable=False, ge=1),
    "upscaling_crop": FieldSpec("bool", True, nullable=False),
    "upscaler_1": FieldSpec("str", "None", nullable=False),
    "upscaler_2": FieldSpec("str", "None", nullable=False),
    "extras_upscaler_2_visibility": _unit(0),
    "upscale_first": FieldSpec("bool", False, nullable=False),
}
_SINGLE_FIELDS = EXTRAS_FIELDS | {"image": FieldSpec("str", "", nullable=False)}
_BATCH_FIELDS = EXTRAS_FIELDS | {"imageList": FieldSpec("list", required=True)}
_FILE_DATA_FIELDS = {
    "data": FieldSpec("str", nullable=False, required=True),
    "name": FieldSpec("str", nullable=False, required=True),
}


async def _validated(
    request: web.Request, fields: dict[str, FieldSpec]
) -> dict[str, Any]:
    body = await read_body(request)
    check_basic_auth(request, request.app[STANDIN].credentials)
    result = validate_fields(fields, body)
    if result.errors:
        raise RequestInvalid(result.errors)
    return result.values


def _postprocess(values: dict[str, Any], source: ImageHeader) -> tuple[str, str]:
    """Upscale one picture as run_extras would (in size): base64 PNG, html_info."""
    for slot in ("upscaler_1", "upscaler_2"):
        if values[slot] not in UPSCALER_NAMES:
            raise WebuiFailure(
                "AssertionError", f"could not find upscaler named {values[slot]}"
            )
    width, height = source.width or 512, source.height or 512
    notes = []
    if values["upscaler_1"] != "None":
        if values["resize_mode"] == 1:
            width, height = values["upscaling_resize_w"], values["upscaling_resize_h"]
            notes.append(f"Postprocess upscale to: {width}x{height}")
        else:
            factor = values["upscaling_resize"]
            width, height = int(width * factor), int(height * factor)
            notes.append(f"Postprocess upscale by: {factor}")
        notes.append(f"Postprocess upscaler: {values['upscaler_1']}")
    seed = int.from_bytes(hashlib.sha256(source.data).digest()[:4], "big")
    png = make_png(seed, max(width, 1), max(height, 1))
    return _b64(png), f"<p>{', '.join(notes)}</p>"


async def extra_single_image(request: web.Request) -> web.StreamResponse:
    """POST /sdapi/v1/extra-single-image."""
    standin = request.app[STANDIN]
    values = await _validated(request, _SINGLE_FIELDS)
    source = await decode_input(standin, values["image"])
    async with standin.queue_lock:
        image, html_info = await asyncio.to_thread(_postprocess, values, source)
    return json_response({"html_info": html_info, "image": image})


async def extra_batch_images(request: web.Request) -> web.StreamResponse:
    """POST /sdapi/v1/extra-batch-images."""
    standin = request.app[STANDIN]
    values = await _validated(request, _BATCH_FIELDS)
    errors: list[dict[str, Any]] = []
    files = []
    for index, item in enumerate(values["imageList"]):
        result = validate_fields(_FILE_DATA_FIELDS, item, ("body", "imageList", index))
        errors += result.errors
        files.append(result.values)
    if errors:
        raise RequestInvalid(errors)
    sources = [await decode_input(standin, file["data"]) for file in files]
    async with standin.queue_lock:
        results = [await asyncio.to_thread(_postprocess, values, s) for s in sources]
    images = [image for image, _ in results]
    html_info = results[0][1] if results else ""
    return json_response({"html_info": html_info, "images": images})


_CAPTIONS = (
    "a painting of a squirrel sitting on a tree branch",
    "a lighthouse on a cliff at dusk, oil painting",
    "a close up of a cat on a windowsill",
)
_TAGS = (
    "1girl, solo, outdoors, smile",
    "animal, no humans, tree",
    "scenery, sky, cloud",
)


async def interrogate(request: web.Request) -> web.StreamResponse:
    """POST /sdapi/v1/interrogate: a caption chosen by the picture's bytes."""
    standin = request.app[STANDIN]
    fields = {
        "image": FieldSpec("str", "", nullable=False),
        "model": FieldSpec("str", "clip", nullable=False),
    }
    values = await _validated(request, fields)
    source = await decode_input(standin, values["image"])
    pick = hashlib.sha256(source.data).digest()[0] % len(_CAPTIONS)
    async with standin.queue_lock:
        if values["model"] == "clip":
            caption = _CAPTIONS[pick]
        elif values["model"] == "deepdanbooru":
            caption = _TAGS[pick]
        else:
            raise WebuiHTTPError(404, "Model not found")
    return json_response({"caption": caption})
