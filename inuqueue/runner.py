"""Serving an aiohttp application until a signal says stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

import structlog
from aiohttp import web

from inuqueue.errors import ConfigError

log = structlog.get_logger("inuqueue.runner")


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def serve_until_stopped(
    app: web.Application,
    host: str,
    port: int,
    name: str,
    shutdown_timeout_s: float,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Start the app on host:port, log where it listens, stop on SIGINT/SIGTERM.

    `on_listening` is told the port it got. A stop waits at most
    `shutdown_timeout_s` for requests still being answered.
    """
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout_s
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); another program "
            "may use the port, or the address is not this machine's: pick another "
            "with --port or --host"
        ) from exc

    bound_port = port
    for address in runner.addresses:
        if isinstance(address, tuple):
            bound_port = int(address[1])
            break
    if on_listening is not None:
        on_listening(bound_port)
    log.info("listening", service=name, url=_url(host, bound_port))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Windows' event loops have no add_signal_handler; Ctrl-C then raises
        # KeyboardInterrupt out of asyncio.run, which the CLI turns into an exit.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping", service=name)
        await runner.cleanup()
