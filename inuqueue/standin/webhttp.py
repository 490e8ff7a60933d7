"""The HTTP shell the webui's FastAPI stack puts around every route, in aiohttp.

It reproduces what a client can observe of FastAPI 0.94 / starlette 0.26 with the
webui's own middlewares: the error bodies, 404/405 shapes, request-body parsing,
Basic auth, GZip over 1000 bytes, the X-Process-Time header and CORS preflights.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.message
import email.utils
import gzip
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from inuqueue.errors import ConfigError, InuqueueError

logger = structlog.get_logger("inuqueue.standin")

# starlette's GZipMiddleware(minimum_size=1000) compresses bodies of at least this.
GZIP_MINIMUM_BYTES = 1000
# Compressing megabytes of base64 at level 9 takes long enough to leave the loop.
GZIP_IN_THREAD_BYTES = 256 * 1024
# Bodies this big (img2img uploads) are parsed off the event loop.
PARSE_IN_THREAD_BYTES = 1024 * 1024
# What uvicorn calls itself; aiohttp's own Server header would give the stand-in away.
SERVER_HEADER = "uvicorn"
# starlette's CORSMiddleware with allow_methods=["*"] lists these on a preflight.
CORS_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
# A dropped response waits at most this long for its first bytes to leave.
DROP_FLUSH_TIMEOUT_S = 2.0


class WebuiHTTPError(InuqueueError):
    """A fastapi.HTTPException from webui code: rendered in the webui's 4-key shape."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class WebuiFailure(InuqueueError):
    """Any other exception the webui lets escape: 500 naming the exception class."""

    def __init__(self, error_class: str, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.status = status


class RequestInvalid(InuqueueError, ValueError):
    """FastAPI's RequestValidationError: 422 with pydantic-v1 error dicts."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


class DroppingResponse(web.Response):
    """A response whose connection is cut after ``after_bytes`` bytes of its body."""

    def __init__(self, *, after_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.after_bytes = after_bytes


def encode_json(value: object) -> bytes:
    """Serialise like starlette's JSONResponse (compact, UTF-8, NaN refused)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


def json_response(value: object, status: int = 200) -> web.Response:
    """A JSON reply with the exact bytes the webui would send."""
    return web.Response(
        body=encode_json(value), status=status, content_type="application/json"
    )


def webui_error_body(error: str, detail: str = "", errors: str = "") -> dict[str, str]:
    """The webui's exception handler shape: {error, detail, body, errors}."""
    return {"error": error, "detail": detail, "body": "", "errors": errors}


def _is_json_content_type(value: str) -> bool:
    message = email.message.Message()
    message["content-type"] = value
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


async def read_body(request: web.Request) -> object:
    """Read a body as FastAPI does: JSON, raw bytes for other types, None if empty."""
    raw = await request.read()
    if not raw:
        return None
    content_type = request.headers.get("Content-Type")
    if content_type and not _is_json_content_type(content_type):
        return raw
    try:
        if len(raw) >= PARSE_IN_THREAD_BYTES:
            return await asyncio.to_thread(json.loads, raw)
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        ctx = {
            k: v
            for k, v in vars(exc).items()
            if k in {"msg", "doc", "pos", "lineno", "colno"}
        }
        error = {
            "loc": ["body", exc.pos],
            "msg": str(exc),
            "type": "value_error.jsondecode",
        }
        raise RequestInvalid([error | {"ctx": ctx}]) from exc
    except ValueError as exc:  # undecodable bytes, not JSON syntax
        raise WebuiHTTPError(400, "There was an error parsing the body") from exc


def parse_api_auth(api_auth: str | None) -> dict[str, str] | None:
    """Parse --api-auth "user:pass[,user2:pass2]"; a ':' in a password is refused."""
    if api_auth is None:
        return None
    credentials: dict[str, str] = {}
    for pair in api_auth.split(","):
        parts = pair.split(":")
        if len(parts) != 2:
            raise ConfigError(
                f"api_auth entry {pair!r} must be exactly 'user:password' "
                "(the webui fails to start on it too)"
            )
        credentials[parts[0]] = parts[1]
    return credentials


def check_basic_auth(request: web.Request, credentials: dict[str, str] | None) -> None:
    """Apply fastapi's HTTPBasic and the webui's credential check, or raise its 401."""
    if credentials is None:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, param = header.partition(" ")
    if not header or scheme.lower() != "basic":
        raise WebuiHTTPError(401, "Not authenticated")
    try:
        decoded = base64.b64decode(param).decode("ascii")
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise WebuiHTTPError(401, "Invalid authentication credentials") from exc
    username, separator, password = decoded.partition(":")
    if not separator:
        raise WebuiHTTPError(401, "Invalid authentication credentials")
    expected = credentials.get(username)
    if expected is None or not hmac.compare_digest(password, expected):
        raise WebuiHTTPError(401, "Incorrect username or password")


def _error_response(exc: Exception) -> web.StreamResponse:
    if isinstance(exc, WebuiHTTPError):
        return json_response(webui_error_body("HTTPException", exc.detail), exc.status)
    if isinstance(exc, RequestInvalid):
        return json_response({"detail": exc.errors}, 422)
    if isinstance(exc, WebuiFailure):
        return json_response(
            webui_error_body(exc.error_class, errors=exc.message), exc.status
        )
    return json_response(webui_error_body(type(exc).__name__, errors=str(exc)), 500)


def _router_error_response(
    request: web.Request, exc: web.HTTPException
) -> web.StreamResponse:
    """404/405 from routing, as starlette's default handler renders them."""
    if isinstance(exc, web.HTTPMethodNotAllowed):
        response = json_response({"detail": "Method Not Allowed"}, 405)
        response.headers["Allow"] = request.app[ALLOW_BY_PATH].get(request.path, "")
        return response
    if exc.status == 404:
        path = request.path
        toggled = path.rstrip("/") if path.endswith("/") else path + "/"
        if path != "/" and toggled in request.app[ALLOW_BY_PATH]:
            # starlette's redirect_slashes: the other spelling of a known path.
            url = request.url.with_path(toggled).with_query(request.query_string)
            location = str(url)
            return web.Response(status=307, headers={"Location": location})
        return json_response({"detail": "Not Found"}, 404)
    return json_response({"detail": exc.reason}, exc.status)


def _cors_preflight(request: web.Request) -> web.Response | None:
    """starlette's CORSMiddleware with no allowed origin: every preflight is refused."""
    is_preflight = (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )
    if not is_preflight:
        return None
    headers = {
        "Vary": "Origin",
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Max-Age": "600",
        "Access-Control-Allow-Credentials": "true",
    }
    return web.Response(status=400, text="Disallowed CORS origin", headers=headers)


async def _maybe_gzip(request: web.Request, response: web.StreamResponse) -> None:
    if not isinstance(response, web.Response) or "gzip" not in request.headers.get(
        "Accept-Encoding", ""
    ):
        return
    body = response.body
    if not isinstance(body, bytes) or len(body) < GZIP_MINIMUM_BYTES:
        return
    if len(body) >= GZIP_IN_THREAD_BYTES:
        compressed = await asyncio.to_thread(gzip.compress, body, 9)
    else:
        compressed = gzip.compress(body, 9)
    response.body = compressed
    response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"


async def _send_then_drop(
    request: web.Request, response: DroppingResponse
) -> web.StreamResponse:
    """Write the head and part of the body straight to the socket, then reset it."""
    body = response.body if isinstance(response.body, bytes) else b""
    after_bytes = max(0, min(response.after_bytes, len(body) - 1))
    transport = request.transport
    if transport is None:
        return response
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    headers = dict(response.headers) | {
        "Content-Length": str(len(body)),
        "Content-Type": response.headers.get("Content-Type", "application/json"),
        "Date": email.utils.formatdate(usegmt=True),
    }
    lines += [f"{name}: {value}" for name, value in headers.items()]
    transport.write(
        ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body[:after_bytes]
    )
    deadline = time.monotonic() + DROP_FLUSH_TIMEOUT_S
    # Aborting discards unsent bytes, so let the kernel take them first.
    # The transport has no flush event to await, hence the short poll.
    pending = transport.get_write_buffer_size
    while pending() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    transport.abort()
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ALLOW_BY_PATH = web.AppKey("allow_by_path", dict[str, str])
DELAY_MS: web.AppKey[Callable[[], float]] = web.AppKey("delay_ms_source")
KNOB_PREFIX = "/_standin/"


@web.middleware
async def webui_shell(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time, delay, error mapping, GZip and connection drops around every route."""
    started_s = time.monotonic()
    delay_ms = request.app[DELAY_MS]()
    if delay_ms > 0 and not request.path.startswith(KNOB_PREFIX):
        await asyncio.sleep(delay_ms / 1000)
    response: web.StreamResponse
    preflight = _cors_preflight(request)
    if preflight is not None:
        response = preflight
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = _router_error_response(request, exc)
        except Exception as exc:  # the webui turns every escaped error into JSON
            if not isinstance(exc, (WebuiHTTPError, RequestInvalid)):
                # The webui prints these too ("API error: ..."), traceback included.
                logger.warning(
                    "api_error",
                    method=request.method,
                    path=request.path,
                    error=type(exc).__name__,
                    exc_info=not isinstance(exc, WebuiFailure),
                )
            response = _error_response(exc)
    await _maybe_gzip(request, response)
    response.headers["X-Process-Time"] = str(round(time.monotonic() - started_s, 4))
    response.headers["Server"] = SERVER_HEADER
    if isinstance(response, DroppingResponse):
        return await _send_then_drop(request, response)
    return response
