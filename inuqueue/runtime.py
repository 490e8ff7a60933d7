"""The live parts of a running daemon, shared by its routes."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from inuqueue.collector import ImageCollector
from inuqueue.config import Config
from inuqueue.consumer import Consumer
from inuqueue.queue import TaskQueue
from inuqueue.store import ImageStore
from inuqueue.upstream import Upstream


@dataclass
class Runtime:
    """Filled in when the daemon starts; the routes only run after that."""

    config: Config
    upstream: Upstream
    _queue: TaskQueue | None = None
    _store: ImageStore | None = None
    consumer: Consumer | None = None
    _collector: ImageCollector | None = None
    # The port the daemon got (with --port 0, known only once it listens).
    bound_port: int | None = None

    def public_base_url(self) -> str:
        """Where callback receivers reach this daemon."""
        return self.config.public_base_url(self.bound_port)

    @property
    def queue(self) -> TaskQueue:
        """The task queue (present once the daemon started)."""
        assert self._queue is not None, "the daemon has not started"
        return self._queue

    @property
    def collector(self) -> ImageCollector:
        """The image collector (present once the daemon started)."""
        assert self._collector is not None, "the daemon has not started"
        return self._collector

    @property
    def store(self) -> ImageStore:
        """The image store (present once the daemon started)."""
        assert self._store is not None, "the daemon has not started"
        return self._store


RUNTIME = web.AppKey("runtime", Runtime)
