"""What the figures share in one run: the scratch directory and the servers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Server


@dataclass
class Context:
    """The run's scratch space, and the servers started for several figures."""

    scratch: Path
    logs: Path
    servers: dict[str, Server] = field(default_factory=dict)

    def data_dir(self, name: str) -> Path:
        """A directory under the scratch space for one daemon or child."""
        path = self.scratch / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def start(self, name: str, *args: str) -> Server:
        """Start a server that the run stops at its end (or earlier, by name)."""
        server = await Server(name, list(args), self.logs).start()
        self.servers[name] = server
        return server

    async def stop(self, name: str) -> None:
        """Stop one server now."""
        server = self.servers.pop(name, None)
        if server is not None:
            await server.stop()

    async def stop_all(self) -> None:
        """Stop every server still running."""
        for name in list(self.servers):
            await self.stop(name)
