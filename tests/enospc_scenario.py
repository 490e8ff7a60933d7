"""A full disk for real: run inside a private mount namespace on a tiny tmpfs.

`python -m tests.enospc_scenario DIR` expects DIR to be a fresh, small tmpfs. It
runs the stand-in and the daemon in this process, fills the disk, and checks that
changes are refused with 507 while reads work, and accepted again once there is
room. It prints one JSON line with what it saw and exits 0 only if all held.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from inuqueue.app import create_app
from inuqueue.config import Config
from inuqueue.runtime import RUNTIME
from inuqueue.standin import StandinConfig, create_standin_app

API = "/inuqueue/v1"
# Bounds: the disk fills long before this many requests.
MAX_ENQUEUES = 2000
RECOVERY_TIMEOUT_S = 20.0


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def scenario(root: Path) -> dict[str, Any]:
    """Fill the disk under a running daemon; report what it answered."""
    standin, standin_url = await _serve(create_standin_app(StandinConfig(step_ms=0)))
    config = Config(upstream=standin_url, data_dir=root / "data", storage_retry_s=0.05)
    app = create_app(config)
    daemon, url = await _serve(app)
    seen: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as http:
            ballast = root / "ballast"
            fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass  # full: the daemon's own writes meet ENOSPC next
            finally:
                os.close(fd)

            for n in range(MAX_ENQUEUES):
                body = {"prompt": "p" * 2000, "seed": n}
                async with http.post(f"{url}{API}/queue/txt2img", json=body) as r:
                    if r.status != 202:
                        seen["refused"] = (r.status, (await r.json())["error"])
                        break
            async with http.get(f"{url}{API}/queue") as r:
                seen["read_while_full"] = r.status
            async with http.get(f"{url}{API}/health") as r:
                seen["health_while_full"] = (await r.json())["status"]

            ballast.unlink()
            journal = app[RUNTIME].queue.journal
            await asyncio.wait_for(journal.healthy.wait(), RECOVERY_TIMEOUT_S)
            async with http.post(f"{url}{API}/queue/txt2img", json={"seed": 1}) as r:
                seen["after_room"] = r.status
    finally:
        await daemon.cleanup()
        await standin.cleanup()
    return seen


def main() -> int:
    """Run the scenario and print what was seen as one JSON line."""
    seen = asyncio.run(scenario(Path(sys.argv[1])))
    print(orjson.dumps(seen).decode())
    ok = (
        seen.get("refused") == (507, "storage_full")
        and seen.get("read_while_full") == 200
        and seen.get("health_while_full") == "degraded"
        and seen.get("after_room") == 202
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
