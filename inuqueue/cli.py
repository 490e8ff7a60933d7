"""The command line: `inuqueue serve`, `inuqueue standin`, `inuqueue demo`."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from yarl import URL

from inuqueue import __version__
from inuqueue.config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_UPSTREAM, Config
from inuqueue.errors import ConfigError, JournalCorrupt
from inuqueue.log import configure_logging

# Named exit codes (sysexits.h where one fits).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DATA = 65  # EX_DATAERR: the journal is damaged
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: the port or data directory cannot be used
EXIT_INTERRUPTED = 130

STANDIN_DEFAULT_PORT = 7860

log = structlog.get_logger("inuqueue.cli")


def _env(name: str, default: Any, convert: Callable[[str], Any] = str) -> Any:
    """A default taken from INUQUEUE_<NAME> when set."""
    raw = os.environ.get(f"INUQUEUE_{name}")
    if raw is None or raw == "":
        return default
    try:
        return convert(raw)
    except (ValueError, argparse.ArgumentTypeError):
        raise ConfigError(f"INUQUEUE_{name}={raw!r} is not a valid value") from None


def _flag(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _at_least(minimum: float, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: `convert`, then refuse values below `minimum`."""

    def check(raw: str) -> Any:
        value = convert(raw)
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"{raw} is not a number from {minimum}")
        return value

    check.__name__ = convert.__name__
    return check


_POSITIVE_INT = _at_least(1, int)
_COUNT = _at_least(0, int)
_SECONDS = _at_least(0.0, float)


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a port (a whole number, 0 to 65535)"
        ) from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{raw} is not a port (0 to 65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every flag's default can come from INUQUEUE_*."""
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="inuqueue",
        description="A durable queue in front of a Stable Diffusion webui.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the daemon in front of a webui",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument(
        "--upstream",
        default=_env("UPSTREAM", DEFAULT_UPSTREAM),
        help="the webui's base URL [INUQUEUE_UPSTREAM]",
    )
    _add_bind_flags(serve, DEFAULT_PORT)
    serve.add_argument(
        "--data",
        type=Path,
        default=_env("DATA", Path("data"), Path),
        help="the data directory: journal and images [INUQUEUE_DATA]",
    )
    serve.add_argument(
        "--no-teapot",
        dest="teapot",
        action="store_false",
        default=_env("TEAPOT", True, _flag),
        help="pass the webui's 2xx answers through instead of 418 (teapot now: "
        "%(default)s) [INUQUEUE_TEAPOT=0]",
    )
    serve.add_argument(
        "--max-attempts",
        type=_POSITIVE_INT,
        default=_env("MAX_ATTEMPTS", defaults.max_attempts, int),
        help="times a generation may break off before its task fails "
        "[INUQUEUE_MAX_ATTEMPTS]",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=_POSITIVE_INT,
        default=_env("MAX_BODY_BYTES", defaults.max_body_bytes, int),
        help="largest request body accepted [INUQUEUE_MAX_BODY_BYTES]",
    )
    serve.add_argument(
        "--shutdown-grace-s",
        type=_SECONDS,
        default=_env("SHUTDOWN_GRACE_S", defaults.shutdown_grace_s, float),
        help="how long a stop waits for the running generation "
        "[INUQUEUE_SHUTDOWN_GRACE_S]",
    )
    serve.add_argument(
        "--token",
        default=_env("TOKEN", None),
        help="require 'Authorization: Bearer TOKEN' on every request [INUQUEUE_TOKEN]",
    )
    serve.add_argument(
        "--upstream-auth",
        default=_env("UPSTREAM_AUTH", None),
        help="user:password for a webui started with --api-auth "
        "[INUQUEUE_UPSTREAM_AUTH]",
    )
    serve.add_argument(
        "--compact-bytes",
        type=_COUNT,
        default=_env("COMPACT_BYTES", defaults.compact_bytes, int),
        help="compact the journal into a snapshot past this size; 0 never "
        "[INUQUEUE_COMPACT_BYTES]",
    )
    serve.add_argument(
        "--history-keep",
        type=_COUNT,
        default=_env("HISTORY_KEEP", None, int),
        help="finished tasks kept at a compaction (default: all) "
        "[INUQUEUE_HISTORY_KEEP]",
    )
    serve.add_argument(
        "--history-max-age-days",
        type=_SECONDS,
        default=_env("HISTORY_MAX_AGE_DAYS", None, float),
        help="finished tasks older than this are dropped at a compaction "
        "(default: none) [INUQUEUE_HISTORY_MAX_AGE_DAYS]",
    )
    serve.add_argument(
        "--webhook-secret",
        default=_env("WEBHOOK_SECRET", None),
        help="sign callbacks with HMAC-SHA256 of this secret [INUQUEUE_WEBHOOK_SECRET]",
    )
    serve.add_argument(
        "--webhook-retry-for-s",
        type=_SECONDS,
        default=_env("WEBHOOK_RETRY_FOR_S", defaults.webhook_retry_for_s, float),
        help="how long after a task finished its callback is tried again "
        "[INUQUEUE_WEBHOOK_RETRY_FOR_S]",
    )
    serve.add_argument(
        "--public-url",
        default=_env("PUBLIC_URL", None),
        help="the base URL callback receivers fetch images from (default: "
        "http://HOST:PORT) [INUQUEUE_PUBLIC_URL]",
    )
    serve.add_argument(
        "--progress-interval-s",
        type=_at_least(0.05, float),
        default=_env("PROGRESS_INTERVAL_S", defaults.progress_interval_s, float),
        help="how often the webui's progress is asked while a task runs "
        "[INUQUEUE_PROGRESS_INTERVAL_S]",
    )
    _add_log_flag(serve)

    standin = commands.add_parser(
        "standin",
        help="run the stand-in webui (for tests and the demo)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_bind_flags(standin, STANDIN_DEFAULT_PORT, env_prefix="STANDIN_")
    standin.add_argument(
        "--step-ms",
        type=float,
        default=_env("STANDIN_STEP_MS", 20.0, float),
        help="simulated work per sampling step [INUQUEUE_STANDIN_STEP_MS]",
    )
    standin.add_argument(
        "--api-auth",
        default=_env("STANDIN_API_AUTH", None),
        help="user:password for HTTP Basic, like the webui's --api-auth",
    )
    _add_log_flag(standin)

    demo = commands.add_parser(
        "demo",
        help="run the stand-in and the daemon, queue work, kill and restart",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument(
        "--data-root",
        type=Path,
        default=Path("data"),
        help="the demo makes a fresh directory under this one",
    )
    demo.add_argument(
        "--step-ms",
        type=float,
        default=40.0,
        help="the stand-in's simulated work per sampling step",
    )
    journal = commands.add_parser("journal", help="check or repair the journal")
    journal_actions = journal.add_subparsers(dest="action", required=True)
    for action, text in (
        ("check", "report the journal and the store, changing nothing"),
        ("repair", "cut a damaged journal back to its last good record"),
    ):
        _add_data_flag(journal_actions.add_parser(action, help=text))
    store = commands.add_parser("store", help="verify the image store")
    store_actions = store.add_subparsers(dest="action", required=True)
    _add_data_flag(
        store_actions.add_parser(
            "verify", help="re-hash every image and set aside damaged ones"
        )
    )
    return parser


def _add_data_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=_env("DATA", Path("data"), Path),
        help="the data directory [INUQUEUE_DATA]",
    )


def _add_bind_flags(
    parser: argparse.ArgumentParser, port: int, env_prefix: str = ""
) -> None:
    parser.add_argument(
        "--host",
        default=_env(f"{env_prefix}HOST", DEFAULT_HOST),
        help=f"address to listen on [INUQUEUE_{env_prefix}HOST]",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=_env(f"{env_prefix}PORT", port, _port),
        help=f"port to listen on, 0 for any free one [INUQUEUE_{env_prefix}PORT]",
    )


def _add_log_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default=_env("LOG_FORMAT", "auto"),
        help="log as JSON lines, for a console, or JSON unless on a terminal "
        "[INUQUEUE_LOG_FORMAT]",
    )


def _log_json(choice: str) -> bool | None:
    return {"auto": None, "json": True, "console": False}[choice]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except ConfigError as exc:
        print(f"inuqueue: {exc}", file=sys.stderr)
        return EXIT_USAGE

    if args.command == "serve":
        problem = (
            _upstream_problem(args.upstream)
            or _data_problem(args.data)
            or _auth_problem(args.token, args.upstream_auth)
            or _public_url_problem(args.public_url)
        )
        if problem:
            print(f"inuqueue: {problem}", file=sys.stderr)
            return EXIT_USAGE
        args.upstream, args.upstream_auth = split_credentials(
            args.upstream, args.upstream_auth
        )

    if args.command in ("journal", "store"):
        return _maintain(args)

    configure_logging(json=_log_json(getattr(args, "log_format", "auto")))
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        # Where signal handlers cannot be installed (Windows), Ctrl-C lands here.
        return EXIT_INTERRUPTED
    except ConfigError as exc:
        print(f"inuqueue: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except JournalCorrupt as exc:
        print(f"inuqueue: {exc}", file=sys.stderr)
        return EXIT_DATA


async def _run(args: argparse.Namespace) -> int:
    from inuqueue.runner import serve_until_stopped

    if args.command == "serve":
        from inuqueue.app import create_app
        from inuqueue.runtime import RUNTIME

        config = Config(
            upstream=args.upstream,
            host=args.host,
            port=args.port,
            data_dir=args.data,
            teapot=args.teapot,
            max_attempts=args.max_attempts,
            max_body_bytes=args.max_body_bytes,
            shutdown_grace_s=args.shutdown_grace_s,
            compact_bytes=args.compact_bytes,
            history_keep=args.history_keep,
            history_max_age_s=(
                None
                if args.history_max_age_days is None
                else args.history_max_age_days * 86_400
            ),
            progress_interval_s=args.progress_interval_s,
            token=args.token,
            upstream_auth=args.upstream_auth or None,
            webhook_secret=args.webhook_secret or None,
            webhook_retry_for_s=args.webhook_retry_for_s,
            public_url=args.public_url or None,
        )
        app = create_app(config)
        runtime = app[RUNTIME]

        def listening(port: int) -> None:
            runtime.bound_port = port

        await serve_until_stopped(
            app,
            args.host,
            args.port,
            "inuqueue",
            config.shutdown_grace_s,
            on_listening=listening,
        )
        return EXIT_OK

    if args.command == "standin":
        from inuqueue.standin import StandinConfig, create_standin_app

        app = create_standin_app(
            StandinConfig(step_ms=args.step_ms, api_auth=args.api_auth)
        )
        await serve_until_stopped(app, args.host, args.port, "standin", 1.0)
        return EXIT_OK

    from inuqueue.demo import run_demo

    return await run_demo(args.data_root, args.step_ms)


def _maintain(args: argparse.Namespace) -> int:
    """`inuqueue journal check|repair` and `inuqueue store verify`."""
    from inuqueue.maintenance import (
        describe_scan,
        repair_journal,
        scan_journal,
        verify_store,
    )
    from inuqueue.store import ImageStore

    if not args.data.is_dir():
        print(f"inuqueue: {args.data} is not a data directory", file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        if args.command == "store":
            lines, healthy = verify_store(args.data)
        elif args.action == "check":
            scan = scan_journal(args.data)
            lines = describe_scan(scan, ImageStore(args.data / "images"))
            healthy = scan.healthy and not any(
                ln.startswith(("MISSING", "NO JOURNAL")) for ln in lines
            )
        else:
            lines, healthy = repair_journal(args.data), True
    except ConfigError as exc:
        print(f"inuqueue: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print("\n".join(lines))
    return EXIT_OK if healthy else EXIT_DATA


def _auth_problem(token: str | None, upstream_auth: str | None) -> str | None:
    if token is not None and not token.strip():
        return "--token is empty; give a token, or leave the flag out for none"
    if upstream_auth is not None and ":" not in upstream_auth:
        return "--upstream-auth takes user:password, as the webui's --api-auth does"
    return None


def _data_problem(data: Path) -> str | None:
    if str(data).strip() in ("", "."):
        return "--data needs a directory name (the default is ./data)"
    return None


def split_credentials(url: str, auth: str | None) -> tuple[str, str | None]:
    """Move user:password out of the upstream URL, where logs would show it."""
    parsed = URL(url)
    if parsed.user is None:
        return url, auth
    credentials = f"{parsed.user}:{parsed.password or ''}"
    bare = str(parsed.with_user(None).with_password(None))
    return bare, auth or credentials


def _upstream_problem(url: str) -> str | None:
    if url.startswith(("http://", "https://")):
        return None
    return (
        f"--upstream {url!r} is not an http:// or https:// URL; give the "
        "webui's address, e.g. http://127.0.0.1:7860"
    )


def _public_url_problem(url: str | None) -> str | None:
    if not url or url.startswith(("http://", "https://")):
        return None
    return (
        f"--public-url {url!r} is not an http:// or https:// URL; give the address "
        "callback receivers reach this daemon at, e.g. http://192.168.1.5:7861"
    )


if __name__ == "__main__":
    sys.exit(main())
