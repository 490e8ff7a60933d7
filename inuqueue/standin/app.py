"""The stand-in webui as an aiohttp application: routes and their order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from inuqueue.standin import routes_generate as gen
from inuqueue.standin import routes_info as info
from inuqueue.standin.config import StandinConfig
from inuqueue.standin.routes_knobs import KNOB_ROUTES
from inuqueue.standin.state import STANDIN, Standin
from inuqueue.standin.webhttp import ALLOW_BY_PATH, DELAY_MS, KNOB_PREFIX, webui_shell

# The webui sets no body-size limit; aiohttp's default of 1 MiB would refuse
# ordinary img2img uploads, so the limit is set out of reach.
MAX_BODY_BYTES = 1 << 40
SDAPI = "/sdapi/v1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# In the webui's registration order: the first route of a path names its Allow.
_SDAPI_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "txt2img", gen.txt2img),
    ("POST", "img2img", gen.img2img),
    ("POST", "extra-single-image", gen.extra_single_image),
    ("POST", "extra-batch-images", gen.extra_batch_images),
    ("POST", "png-info", info.png_info),
    ("GET", "progress", info.progress),
    ("POST", "interrogate", gen.interrogate),
    ("POST", "interrupt", info.interrupt),
    ("POST", "skip", info.skip),
    ("GET", "options", info.get_options),
    ("POST", "options", info.set_options),
    *(("GET", name, handler) for name, handler in info.LIST_ROUTES.items()),
    ("POST", "refresh-embeddings", info.refresh_locked),
    ("POST", "refresh-checkpoints", info.refresh_locked),
    ("POST", "refresh-vae", info.refresh_locked),
    ("POST", "unload-checkpoint", info.checkpoint_noop),
    ("POST", "reload-checkpoint", info.checkpoint_noop),
    ("GET", "loras", info.loras),
    ("POST", "refresh-loras", info.refresh_loras),
)
_OTHER_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/", info.root_page),
    ("GET", "/internal/ping", info.internal_ping),
    ("GET", "/internal/pending-tasks", info.internal_pending_tasks),
    ("POST", "/internal/progress", info.internal_progress),
)


def create_standin_app(config: StandinConfig) -> web.Application:
    """Build a stand-in webui; ``app[STANDIN]`` is its live state."""
    standin = Standin(config)
    app = web.Application(middlewares=[webui_shell], client_max_size=MAX_BODY_BYTES)
    app[STANDIN] = standin
    app[DELAY_MS] = lambda: standin.delay_ms
    allow: dict[str, str] = {}
    app[ALLOW_BY_PATH] = allow

    def add(method: str, path: str, handler: Handler) -> None:
        if method == "GET":
            app.router.add_get(path, handler)
            allow.setdefault(path, "GET, HEAD")
        else:
            app.router.add_route(method, path, handler)
            allow.setdefault(path, method)

    for method, name, handler in _SDAPI_ROUTES:
        add(method, f"{SDAPI}/{name}", handler)
    for method, path, handler in _OTHER_ROUTES:
        add(method, path, handler)
    for method, name, handler in KNOB_ROUTES:
        add(method, f"{KNOB_PREFIX}{name}", handler)
    return app
