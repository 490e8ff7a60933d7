"""The daemon's aiohttp application: routes, middleware and the life cycle."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web

from inuqueue import agent_scheduler, api, control, openapi, sse, webui_routes
from inuqueue.access import is_loopback, make_token_middleware
from inuqueue.collector import ImageCollector
from inuqueue.config import Config
from inuqueue.consumer import Consumer
from inuqueue.errors import ConfigError
from inuqueue.http import error_middleware
from inuqueue.lock import DataDirLock
from inuqueue.proxy import make_proxy_middleware
from inuqueue.queue import TaskQueue
from inuqueue.runtime import RUNTIME, Runtime
from inuqueue.store import ImageStore
from inuqueue.upstream import Upstream
from inuqueue.webhooks import Deliverer

log = structlog.get_logger("inuqueue.app")


def create_app(config: Config) -> web.Application:
    """The daemon as an aiohttp application; it opens its data when started."""
    upstream = Upstream(config)
    # The token check comes first, so that nothing, proxied or own, goes without
    # it; then the proxy: requests no own route matches never reach the rest.
    middlewares = [
        make_proxy_middleware(
            upstream, teapot=config.teapot, own_auth=config.token is not None
        ),
        error_middleware,
    ]
    if config.token is not None:
        middlewares.insert(0, make_token_middleware(config.token))
    app = web.Application(
        middlewares=middlewares, client_max_size=config.max_body_bytes
    )
    app[RUNTIME] = Runtime(config=config, upstream=upstream)
    for module in (api, control, openapi, sse, webui_routes, agent_scheduler):
        app.add_routes(module.routes)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_end_streams)
    return app


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory or say in one line why it cannot be used."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"the data directory {data_dir} cannot be used ({exc.strerror}); "
            "choose another with --data or INUQUEUE_DATA"
        ) from exc


async def _end_streams(app: web.Application) -> None:
    """Let open event streams and waiting webui clients end: a stop waits on none."""
    queue = app[RUNTIME]._queue
    if queue is not None:
        queue.events.close()
        queue.begin_stop()


async def _heal_storage(queue: TaskQueue, consumer: Consumer, retry_s: float) -> None:
    """While the journal refuses writes, try every `retry_s` to make it work."""
    while True:
        await queue.journal.failed.wait()
        await asyncio.sleep(retry_s)
        # The consumer holds a task of the old state while it works on one.
        await consumer.idle.wait()
        try:
            await queue.heal()
        except OSError as exc:
            log.warning("journal.still_failing", error=str(exc), retry_s=retry_s)


async def _compact_when_due(queue: TaskQueue, collector: ImageCollector) -> None:
    """Compact the journal whenever it has grown past its threshold."""
    while True:
        await queue.journal.compact_due.wait()
        try:
            orphans = await queue.compact()
        except OSError as exc:
            # A failed write is the healer's; the next growth tries again.
            queue.journal.compact_due.clear()
            log.warning("journal.compaction_failed", error=str(exc))
            continue
        collector.collect_later(orphans)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    config = runtime.config
    started_mono = time.monotonic()
    prepare_data_dir(config.data_dir)
    lock = DataDirLock(config.data_dir)
    lock.acquire()
    try:
        store = ImageStore(config.data_dir / "images")
        await asyncio.to_thread(store.open)
        queue = TaskQueue(
            config.data_dir,
            max_attempts=config.max_attempts,
            fsync=config.fsync,
            compact_bytes=config.compact_bytes,
            history_keep=config.history_keep,
            history_max_age_s=config.history_max_age_s,
        )
        await queue.open()
    except BaseException:
        lock.release()
        raise
    await runtime.upstream.open()
    consumer = Consumer(queue, store, runtime.upstream, config)
    collector = ImageCollector(store, queue.state, config.image_grace_s)
    collector.collect_later(queue.replay_orphans)
    runtime._queue, runtime._store, runtime.consumer = queue, store, consumer
    runtime._collector = collector
    consumer_task = asyncio.create_task(consumer.run(), name="consumer")
    collector_task = asyncio.create_task(collector.run(), name="collector")
    healer_task = asyncio.create_task(
        _heal_storage(queue, consumer, config.storage_retry_s), name="healer"
    )
    compactor_task = asyncio.create_task(
        _compact_when_due(queue, collector), name="compactor"
    )
    deliverer_task = asyncio.create_task(
        Deliverer(queue, store, config, runtime.public_base_url).run(),
        name="deliverer",
    )
    log.info("daemon.started", data=str(config.data_dir), upstream=config.upstream)
    if not queue.state.tasks and any(store.digests()):
        log.warning(
            "journal.empty_beside_images",
            data=str(config.data_dir),
            advice="the journal holds no task but the store has images: if the "
            "journal was lost, stop and restore it; the images are kept",
        )
    if config.token is None and not is_loopback(config.host):
        log.warning(
            "daemon.open_to_the_network",
            host=config.host,
            advice="anyone who reaches this address can queue, cancel and read "
            "every task; start with --token (INUQUEUE_TOKEN) or bind 127.0.0.1",
        )

    yield

    consumer.stopping = True
    if consumer.current is not None:
        # Let a generation that is almost done finish rather than run it again.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consumer.idle.wait(), config.shutdown_grace_s)
    background = (
        consumer_task,
        collector_task,
        healer_task,
        compactor_task,
        deliverer_task,
    )
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    await store.drain()
    await runtime.upstream.close()
    await queue.close()
    lock.release()
    log.info(
        "daemon.stopped",
        uptime_s=round(time.monotonic() - started_mono, 1),
        tasks=len(queue.state.tasks),
        pending=len(queue.state.pending),
        journal_records=queue.journal.records,
    )
