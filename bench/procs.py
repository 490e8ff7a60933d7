"""Starting and stopping the bench's server and measurement processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.common import REPO, parse_child_report

# A daemon replaying a million-record journal takes a while before it listens.
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
CHILD_TIMEOUT_S = 300.0


class Server:
    """`python -m bench.serve ...` in a child process; its stderr goes to a file."""

    def __init__(self, name: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self._proc is not None
        return self._proc.pid

    def log_count(self, event: str) -> int:
        """How many log lines of the server name `event`."""
        # Whatever the JSON renderer's spacing: "event": "x" or "event":"x".
        pattern = re.compile(r'"event":\s*"' + re.escape(event) + '"')
        with self.log_path.open(errors="replace") as log:
            return sum(1 for line in log if pattern.search(line))

    def cpu_seconds(self) -> float:
        """CPU time (user + system, every thread) the server has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def start(self) -> Server:
        """Start it and wait until it says which port it listens on."""
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.serve",
                *self.args,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
                cwd=REPO,
            )
        assert self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), START_TIMEOUT_S)
        except TimeoutError:
            await self.stop()
            raise RuntimeError(
                f"{self.name} did not start in {START_TIMEOUT_S} s"
            ) from None
        if not line.startswith(b"PORT "):
            await self.stop()
            tail = self.log_path.read_text(errors="replace")[-800:]
            raise RuntimeError(f"{self.name} did not start: {tail}")
        self.port = int(line.split()[1])
        return self

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not end in time; always reaped."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def run_child(module: str, *args: str) -> dict[str, Any]:
    """Run `python -m <module> args…` and return the result it reported."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=REPO,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), CHILD_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise RuntimeError(f"{module} {args} ran over {CHILD_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"{module} {args} exited {proc.returncode}: "
            f"{stderr.decode(errors='replace')[-1500:]}"
        )
    return parse_child_report(stdout.decode(errors="replace"))
