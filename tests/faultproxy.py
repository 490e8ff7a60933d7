"""A TCP proxy on 127.0.0.1 that breaks the link to the webui on purpose."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


@dataclass
class Faults:
    """What the proxy does to the next connections."""

    # Accept nothing: the webui looks down.
    refuse: bool = False
    # Cut a connection once this many answer bytes went through (None: never).
    cut_after_bytes: int | None = None
    # How many connections the cut applies to.
    cut_count: int = 0
    # Wait this long before passing on each piece of an answer.
    delay_s: float = 0.0


class FaultProxy:
    """Forwards 127.0.0.1:<port> to a target, with the faults it is told."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.faults = Faults()
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> None:
        """Listen (again) on `port`, or a free one."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_listening(self) -> None:
        """Close the listening socket: new connections are refused."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def close(self) -> None:
        """Stop listening and break every open connection."""
        await self.stop_listening()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        cut = None
        if self.faults.cut_count > 0 and self.faults.cut_after_bytes is not None:
            self.faults.cut_count -= 1
            cut = self.faults.cut_after_bytes
        try:
            webui_r, webui_w = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            client_w.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(
                self._pipe(client_r, webui_w, None),
                self._pipe(webui_r, client_w, cut),
            )
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for writer in (client_w, webui_w):
                transport = writer.transport
                if cut is not None:
                    transport.abort()
                else:
                    with contextlib.suppress(Exception):
                        writer.close()
            self._tasks.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        cut: int | None,
    ) -> None:
        sent = 0
        while data := await reader.read(65536):
            if self.faults.delay_s:
                await asyncio.sleep(self.faults.delay_s)
            if cut is not None and sent + len(data) >= cut:
                writer.write(data[: max(cut - sent, 0)])
                await writer.drain()
                raise ConnectionResetError("cut by the fault proxy")
            writer.write(data)
            await writer.drain()
            sent += len(data)
        with contextlib.suppress(OSError):
            writer.write_eof()
