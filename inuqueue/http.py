"""The HTTP edge: JSON responses, the project's error shape, the error middleware."""

from __future__ import annotations

import errno
import json
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from inuqueue.errors import InuqueueError
from inuqueue.journal import JournalWriteFailed
from inuqueue.queue import TaskConflict
from inuqueue.state import StateError

log = structlog.get_logger("inuqueue.http")

API_PREFIX = "/inuqueue/v1"


class ApiError(InuqueueError):
    """An error answer: HTTP status, a short code and a message saying what to do."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response serialised by orjson (by the json module for the rare
    integer past 64 bits, say from the webui's progress, which orjson refuses)."""
    try:
        body = orjson.dumps(data)
    except TypeError:
        body = json.dumps(data, separators=(",", ":")).encode()
    return web.Response(
        body=body,
        status=status,
        headers=headers,
        content_type="application/json",
    )


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The one error shape of inuqueue's own routes."""
    return json_response({"error": code, "message": message, **extra}, status=status)


_HTTP_MESSAGES = {
    404: ("not_found", "There is no such inuqueue route; see the README's API list."),
    405: ("method_not_allowed", "This route does not take that method."),
    413: (
        "body_too_large",
        "The request body is over the limit; raise --max-body-bytes if it is "
        "meant to be this large.",
    ),
}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Turn every failure of an own route into the JSON error shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, **exc.extra)
    except TaskConflict as exc:
        return error_response(
            409, "task_conflict", str(exc), status_now=exc.task.status
        )
    except StateError as exc:
        # Another request changed the task while this one was on its way.
        return error_response(
            409,
            "task_conflict",
            f"The task changed while this request was handled ({exc}); read it "
            "again, then send the request again if it still applies.",
        )
    except RequestPayloadError as exc:
        return error_response(
            400,
            "unreadable_body",
            f"The body could not be read ({exc.__cause__ or exc}); check its "
            "Content-Encoding, or send it uncompressed.",
        )
    except JournalWriteFailed as exc:
        if exc.cause.errno == errno.ENOSPC:
            return error_response(
                507,
                "storage_full",
                f"The disk holding {exc.path} is full, so the change was not "
                "saved. Free some space; reads still work.",
            )
        return error_response(
            503,
            "storage_failed",
            f"Writing {exc.path} failed ({exc.cause.strerror}), so the change was "
            "not saved. Check the disk; reads still work.",
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_MESSAGES.get(
            exc.status, ("http_error", exc.reason or "The request failed.")
        )
        response = error_response(exc.status, code, message)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("http.unhandled", method=request.method, path=request.path)
        return error_response(
            500,
            "internal",
            "inuqueue failed to handle this request; the daemon's log has the "
            "details. Nothing acknowledged was lost.",
        )
