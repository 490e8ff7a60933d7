"""Access control: with a token set, every route asks for `Bearer <token>`."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from inuqueue.http import API_PREFIX, error_response

# Browsers' EventSource cannot send headers, so the event stream also takes the
# token as ?access_token=.
_QUERY_TOKEN_PATHS = frozenset({API_PREFIX + "/events"})


def is_loopback(host: str) -> bool:
    """Whether a bind address only answers this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_token_middleware(token: str) -> Middleware:
    """A middleware that answers 401 unless the request carries the token."""
    expected = token.encode()

    @web.middleware
    async def require_token(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if request.path in _QUERY_TOKEN_PATHS and "access_token" in request.query:
            scheme, given = "bearer", request.query["access_token"]
        # The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
        valid = scheme.lower() == "bearer"
        if not (hmac.compare_digest(given.strip().encode(), expected) and valid):
            response = error_response(
                401,
                "unauthorized",
                "This inuqueue needs 'Authorization: Bearer <token>' (the token it "
                "was started with, --token or INUQUEUE_TOKEN) on every request.",
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="inuqueue"'
            return response
        return await handler(request)

    return require_token
