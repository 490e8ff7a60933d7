"""The teapot fallthrough: every request that is not inuqueue's goes to the webui.

A 2xx from the webui comes back as 418 I'm a teapot with the webui's body ("I know
what you want, but I am not the one to ask"); anything else comes back unchanged.
"""

from __future__ import annotations

import uuid

import aiohttp
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict, CIMultiDictProxy

from inuqueue.http import API_PREFIX, error_response
from inuqueue.upstream import Upstream, describe_error

log = structlog.get_logger("inuqueue.proxy")

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The connection to the webui is ours: its Host, not the client's.
_NOT_FORWARDED = HOP_BY_HOP | {"host"}


def is_own_path(path: str) -> bool:
    """Whether a path belongs to inuqueue's own API, matched or not."""
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


# Marks requests this daemon forwarded, so that one pointed at itself notices.
VIA_HEADER = "X-Inuqueue-Via"
_INSTANCE = uuid.uuid4().hex


def make_proxy_middleware(
    upstream: Upstream, *, teapot: bool, own_auth: bool = False
) -> Middleware:
    """The middleware that forwards requests no own route matched.

    With `own_auth`, the client's Authorization header is inuqueue's token and is
    never passed on to the webui.
    """

    @web.middleware
    async def proxy_middleware(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        unmatched = request.match_info.http_exception is not None
        if not unmatched or is_own_path(request.path):
            return await handler(request)
        if _INSTANCE in request.headers.getall(VIA_HEADER, ()):
            return error_response(
                508,
                "proxy_loop",
                f"--upstream {upstream.url} leads back to this inuqueue; point it "
                "at the webui's own address.",
            )
        if any(part in (".", "..") for part in request.path.split("/")):
            # The webui would resolve these; a queued route must not be reached
            # around the queue through /sdapi/v1/./txt2img.
            return error_response(
                400, "invalid_path", "Send the path without '.' or '..' segments."
            )
        return await forward(request, upstream, teapot=teapot, own_auth=own_auth)

    return proxy_middleware


def _forward_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    forwarded: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in _NOT_FORWARDED:
            forwarded.add(name, value)
    return forwarded


async def forward(
    request: web.Request, upstream: Upstream, *, teapot: bool, own_auth: bool = False
) -> web.StreamResponse:
    """Send the request to the webui and stream its answer back."""
    # rel_url has no scheme or host even for an absolute-form request line, so a
    # request can never steer the proxy anywhere but the configured webui.
    url = upstream.url + request.rel_url.raw_path_qs
    headers = _forward_headers(request.headers)
    if own_auth or upstream.auth is not None:
        headers.popall("Authorization", None)
    if upstream.auth is not None:
        headers["Authorization"] = upstream.auth
    headers.add(VIA_HEADER, _INSTANCE)
    data = request.content if request.body_exists else None
    response: web.StreamResponse | None = None
    try:
        async with upstream.proxy.request(
            request.method,
            url,
            headers=headers,
            data=data,
            allow_redirects=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        ) as answer:
            upstream.mark(True)
            status = answer.status
            if teapot and 200 <= status < 300:
                status = 418
            response = web.StreamResponse(status=status)
            for name, value in answer.headers.items():
                if name.lower() in HOP_BY_HOP:
                    continue
                if name.lower() == "location" and value.startswith(upstream.url):
                    # A redirect to the webui's own address would lead the
                    # client around inuqueue; it stays relative to inuqueue.
                    value = value[len(upstream.url) :] or "/"
                response.headers.add(name, value)
            response.headers["X-Upstream-Status"] = str(answer.status)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except aiohttp.ClientConnectorError as exc:
        upstream.mark(False, describe_error(exc))
        return error_response(
            502,
            "upstream_unreachable",
            f"The webui at {upstream.url} did not accept the connection "
            f"({describe_error(exc)}). Start it with --api, or point inuqueue at "
            "it with --upstream.",
            upstream=upstream.url,
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        if response is not None and response.prepared:
            # The answer is half sent; all that is left is to break it off.
            log.warning("proxy.broken_off", path=request.path, error=str(exc))
            if request.transport is not None:
                request.transport.close()
            return response
        timed_out = isinstance(exc, TimeoutError)
        return error_response(
            504 if timed_out else 502,
            "upstream_timeout" if timed_out else "upstream_failed",
            f"The webui at {upstream.url} "
            + ("did not answer in time." if timed_out else "broke off its answer")
            + f" ({describe_error(exc)}). Check that it is running.",
            upstream=upstream.url,
        )
