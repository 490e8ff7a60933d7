"""The servers a benchmark runs, each in a process of its own on 127.0.0.1, port 0.

    python -m bench.serve bare                      a handler that answers 202
    python -m bench.serve standin [--step-ms MS] [--noise] [--marks]
    python -m bench.serve daemon --upstream URL --data DIR
    python -m bench.serve files --root DIR          GET/POST /<name> sends the file

Each prints ``PORT <n>`` on stdout once it listens, and stops on SIGTERM. The daemon
is built as `inuqueue serve` builds it (same Config defaults, fsync on, JSON logs on
stderr); only the port and where it listens are fixed here.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from inuqueue.app import create_app
from inuqueue.config import Config
from inuqueue.log import configure_logging
from inuqueue.standin import StandinConfig, create_standin_app

HOST = "127.0.0.1"
# The generation routes whose arrival and answer the dispatch-gap figure times.
TIMED_PATHS = frozenset({"/sdapi/v1/txt2img", "/sdapi/v1/img2img"})
MARKS_PATH = "/_bench/marks"

_BARE_ANSWER = orjson.dumps(
    {"task_id": "00000000-0000-4000-8000-000000000000", "status": "pending"}
)


async def bare_enqueue(request: web.Request) -> web.Response:
    """The baseline of the enqueue rate: read the body, answer 202."""
    await request.read()
    return web.Response(
        body=_BARE_ANSWER,
        status=202,
        content_type="application/json",
        headers={"Location": "/inuqueue/v1/task/00000000"},
    )


def bare_app() -> web.Application:
    """An aiohttp app with one handler on every path."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", bare_enqueue)
    return app


class Marks:
    """When each generation request arrived and when its answer was sent."""

    def __init__(self) -> None:
        self.received: list[float] = []
        self.sent: list[float] = []


MARKS = web.AppKey("bench_marks", Marks)


@web.middleware
async def marks_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Outermost middleware: time a generation's arrival and its answer leaving.

    The answer is prepared and written here, so that the time is taken once its
    bytes are handed to the transport; aiohttp then finds it already sent.
    """
    if request.method != "POST" or request.path not in TIMED_PATHS:
        return await handler(request)
    marks = request.app[MARKS]
    marks.received.append(time.perf_counter())
    response = await handler(request)
    if not response.prepared:
        await response.prepare(request)
        await response.write_eof()
    marks.sent.append(time.perf_counter())
    return response


async def get_marks(request: web.Request) -> web.Response:
    """The timestamps so far (perf_counter seconds of this process)."""
    marks = request.app[MARKS]
    data = {"received": marks.received, "sent": marks.sent}
    return web.Response(body=orjson.dumps(data), content_type="application/json")


async def reset_marks(request: web.Request) -> web.Response:
    """Forget the timestamps so far."""
    marks = request.app[MARKS]
    marks.received.clear()
    marks.sent.clear()
    return web.Response(status=204)


def standin_app(step_ms: float, *, noise: bool, marks: bool) -> web.Application:
    """The stand-in webui, optionally with the timing middleware around it."""
    app = create_standin_app(StandinConfig(step_ms=step_ms, noise_images=noise))
    if marks:
        app[MARKS] = Marks()
        app.middlewares.insert(0, marks_middleware)
        app.router.add_get(MARKS_PATH, get_marks)
        app.router.add_delete(MARKS_PATH, reset_marks)
    return app


def files_app(root: Path) -> web.Application:
    """Sends the files of one directory (sendfile: no copy in this process)."""

    async def send(request: web.Request) -> web.StreamResponse:
        await request.read()
        path = root / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": "application/json"})

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{name}", send)
    return app


def build(args: argparse.Namespace) -> web.Application:
    """The application the command line asks for."""
    if args.kind == "bare":
        return bare_app()
    if args.kind == "standin":
        return standin_app(args.step_ms, noise=args.noise, marks=args.marks)
    if args.kind == "files":
        return files_app(Path(args.root))
    configure_logging(json=True)
    config = Config(upstream=args.upstream, host=HOST, port=0, data_dir=args.data)
    return create_app(config)


async def serve(app: web.Application) -> None:
    """Listen on a free loopback port, say which, and run until SIGTERM."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = next(int(a[1]) for a in runner.addresses if isinstance(a, tuple))
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """Run one server."""
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("kind", choices=("bare", "standin", "daemon", "files"))
    parser.add_argument("--step-ms", type=float, default=0.0)
    parser.add_argument("--noise", action="store_true")
    parser.add_argument("--marks", action="store_true")
    parser.add_argument("--upstream", default="")
    parser.add_argument("--data", type=Path, default=Path())
    parser.add_argument("--root", default="")
    args = parser.parse_args()
    if args.kind == "daemon" and not args.upstream.startswith("http://127.0.0.1:"):
        parser.error("the daemon's upstream must be a loopback server of the bench")
    asyncio.run(serve(build(args)))


if __name__ == "__main__":
    main()
