"""Removes images that no task points at any more, after a grace period."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from inuqueue.state import QueueState
from inuqueue.store import ImageStore

log = structlog.get_logger("inuqueue.collector")


class ImageCollector:
    """Deletes unreferenced images once they have been idle for `grace_s`.

    The grace period covers the moment between an image landing in the store and
    the journal record that points at it: an img2img input is stored before its
    task is queued, and a reused image gets a fresh time when it is stored again.
    """

    def __init__(self, store: ImageStore, state: QueueState, grace_s: float) -> None:
        self.store = store
        self.state = state
        self.grace_s = grace_s
        self._candidates: set[str] = set()
        self._wake = asyncio.Event()
        self.removed = 0

    def collect_later(self, digests: set[str]) -> None:
        """Consider these images for removal."""
        self._candidates |= digests
        self._wake.set()

    async def run(self) -> None:
        """Collect what forgetting left without a reference, until cancelled.

        Only images this daemon saw lose their last reference are candidates:
        an image that no record points at for some other reason (a journal cut
        back by a repair, or lost) is kept, since it may be all that is left.
        """
        while True:
            await self.sweep()
            self._wake.clear()
            if self._candidates:
                # Some were too young: look again once they may be old enough.
                await _wait(self._wake, max(self.grace_s, 1.0))
            else:
                await self._wake.wait()

    async def sweep(self) -> int:
        """One pass over the candidates; returns how many images went."""
        removed = 0
        for digest in list(self._candidates):
            if self.state.image_refs.get(digest, 0) > 0:
                self._candidates.discard(digest)
                continue
            if await asyncio.to_thread(self.store.remove_if_idle, digest, self.grace_s):
                self._candidates.discard(digest)
                removed += 1
        if removed:
            self.removed += removed
            log.info("images.collected", removed=removed, waiting=len(self._candidates))
        return removed


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
