"""The daemon's settings: one frozen dataclass that holds every default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_UPSTREAM = "http://127.0.0.1:7860"
DEFAULT_HOST = "127.0.0.1"
# 7860 is the webui's own port; the next one keeps inuqueue easy to find beside it.
DEFAULT_PORT = 7861


@dataclass(frozen=True)
class Config:
    """Everything `inuqueue serve` can be told, with the defaults a user gets."""

    upstream: str = DEFAULT_UPSTREAM
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = Path("data")
    # Answer the webui's 2xx replies with 418, saying "ask the webui, not me".
    teapot: bool = True
    # A task whose generation broke off this many times ends failed, so a request
    # that crashes the webui every time cannot loop forever.
    max_attempts: int = 3
    # img2img bodies carry several base64 images of a few MB each.
    max_body_bytes: int = 256 * 1024 * 1024
    # Connecting to a local webui takes microseconds; a long wait means it is down.
    upstream_connect_timeout_s: float = 10.0
    # A generation can run for hours, so there is no overall timeout on it; this
    # bounds only silence between two reads of its answer (0 = wait forever).
    generation_read_timeout_s: float = 0.0
    # Proxied requests include POST /options, which waits for the running job.
    proxy_timeout_s: float = 600.0
    # Back-off between tries to reach a webui that is down, doubling up to the cap.
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    # How often the webui's /progress is asked while a task runs.
    progress_interval_s: float = 1.0
    # How long DELETE of a running task waits for the webui to stop it.
    interrupt_wait_s: float = 30.0
    # An image nobody points at is removed once it was idle this long, so that an
    # input stored just before its task is queued is never taken away.
    image_grace_s: float = 600.0
    # The journal is compacted into a snapshot once it is this large (and twice
    # the last snapshot), so that its size follows the tasks kept, not every change.
    compact_bytes: int = 64 * 1024 * 1024
    # Finished tasks kept in the history (None: all) and for how long (None: ever).
    history_keep: int | None = None
    history_max_age_s: float | None = None
    # After a failed journal write, how often to try whether the disk works again.
    storage_retry_s: float = 2.0
    # How long a graceful stop waits for the running generation before leaving it.
    shutdown_grace_s: float = 10.0
    # False only in tests and benchmarks that measure what fsync costs.
    fsync: bool = True
    # Every request must carry "Authorization: Bearer <token>" (None: no check).
    token: str | None = None
    # "user:password" for a webui started with --api-auth (None: send none).
    upstream_auth: str | None = None
    # Logs as JSON lines (None: JSON unless stderr is a terminal).
    log_json: bool | None = None
    # Callbacks are signed with HMAC-SHA256 of this secret (None: unsigned).
    webhook_secret: str | None = None
    # One delivery try waits this long for the receiver's answer.
    webhook_timeout_s: float = 10.0
    # Back-off between tries of a failed delivery, doubling up to the cap, and how
    # long after the task finished inuqueue keeps trying before it gives up.
    webhook_retry_initial_s: float = 1.0
    webhook_retry_max_s: float = 300.0
    webhook_retry_for_s: float = 86_400.0
    # Deliveries in flight at once, so one slow receiver does not hold up others.
    webhook_concurrency: int = 4
    # The base URL receivers fetch images from (None: http://host:port).
    public_url: str | None = None

    @property
    def upstream_url(self) -> str:
        """The upstream base URL without a trailing slash."""
        return self.upstream.rstrip("/")

    def public_base_url(self, bound_port: int | None = None) -> str:
        """Where others reach this daemon (listening on `bound_port`, if known),
        without a trailing slash."""
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        # A wildcard address is not one a receiver can connect to. "::" listens
        # on IPv6 alone (asyncio sets IPV6_V6ONLY), so its loopback is ::1.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
            self.host, self.host
        )
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{bound_port or self.port}"
