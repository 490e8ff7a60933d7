"""The webui on the other side: HTTP sessions to it and what we know of its health."""

from __future__ import annotations

import base64
import time

import aiohttp
import structlog

from inuqueue.config import Config
from inuqueue.errors import ConfigError

log = structlog.get_logger("inuqueue.upstream")

# A probe that takes longer than this counts as "down"; /progress takes no lock.
PROBE_TIMEOUT_S = 5.0
PROBE_PATH = "/sdapi/v1/progress?skip_current_image=true"
AUTH_HINT = (
    "the webui answered 401: it was started with --api-auth; start inuqueue with "
    "--upstream-auth user:password"
)


class Upstream:
    """Sessions to the webui and its reachability, as last seen."""

    def __init__(self, config: Config) -> None:
        self.url = config.upstream_url
        self._config = config
        self.auth = basic_auth_header(config.upstream_auth)
        self._auth_headers = {"Authorization": self.auth} if self.auth else None
        self.reachable: bool | None = None
        self.last_error: str | None = None
        self._last_contact_mono = 0.0
        self._generation: aiohttp.ClientSession | None = None
        self._proxy: aiohttp.ClientSession | None = None
        self._control: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Create the client sessions."""
        config = self._config
        read_s = config.generation_read_timeout_s or None
        self._generation = aiohttp.ClientSession(
            # A fresh connection per generation: a keep-alive connection the webui
            # closed between tasks would make a POST fail after it may have arrived.
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=config.upstream_connect_timeout_s,
                sock_read=read_s,
            ),
            auto_decompress=True,
            headers=self._auth_headers,
        )
        self._proxy = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=config.upstream_connect_timeout_s,
                sock_read=config.proxy_timeout_s,
            ),
            # The proxy passes bodies through as they came, compressed or not.
            auto_decompress=False,
            # Set-Cookie from the webui belongs to the client, not to inuqueue.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # inuqueue's own small calls: probes, progress, interrupt.
        self._control = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S),
            headers=self._auth_headers,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        """Close the client sessions."""
        for session in (self._generation, self._proxy, self._control):
            if session is not None:
                await session.close()

    @property
    def generation(self) -> aiohttp.ClientSession:
        """The session for generation requests."""
        assert self._generation is not None, "Upstream.open() was not awaited"
        return self._generation

    @property
    def control(self) -> aiohttp.ClientSession:
        """The session for inuqueue's own probes, progress and interrupts."""
        assert self._control is not None, "Upstream.open() was not awaited"
        return self._control

    @property
    def proxy(self) -> aiohttp.ClientSession:
        """The session for proxied requests."""
        assert self._proxy is not None, "Upstream.open() was not awaited"
        return self._proxy

    def mark(self, reachable: bool, error: str | None = None) -> None:
        """Record the outcome of a contact; log only when the state changes."""
        self._last_contact_mono = time.monotonic()
        self.last_error = error
        if reachable == self.reachable:
            return

        before, self.reachable = self.reachable, reachable
        if reachable and before is not None:
            log.info("upstream.reachable", url=self.url)
        elif not reachable:
            log.warning("upstream.unreachable", url=self.url, error=error)

    async def probe(self) -> bool:
        """Ask the webui for its progress; any HTTP answer means it is up."""
        try:
            async with self.control.get(self.url + PROBE_PATH) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.mark(False, describe_error(exc))
            return False
        if response.status == 401:
            # Up, but of no use to inuqueue until it has the credentials.
            self.mark(False, AUTH_HINT)
            return False
        self.mark(True)
        return True

    async def reachable_now(self, max_age_s: float = 5.0) -> bool:
        """Reachability no older than `max_age_s`, probing if need be."""
        fresh = time.monotonic() - self._last_contact_mono < max_age_s
        if fresh and self.reachable is not None:
            return self.reachable
        return await self.probe()


def basic_auth_header(value: str | None) -> str | None:
    """The Authorization header for "user:password" (the webui's --api-auth form)."""
    if value is None:
        return None
    user, sep, _ = value.partition(":")
    if not sep or not user:
        raise ConfigError(
            "--upstream-auth takes user:password, as the webui's --api-auth does"
        )
    return "Basic " + base64.b64encode(value.encode("utf-8")).decode("ascii")


def describe_error(exc: BaseException) -> str:
    """A one-line description of an exception for logs and task errors."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
