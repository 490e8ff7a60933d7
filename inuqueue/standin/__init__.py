"""A stand-in for AUTOMATIC1111's webui /sdapi/v1 API, faithful enough to test against.

``create_standin_app(StandinConfig())`` gives an aiohttp application; its live
state (``app[STANDIN]``) has the knobs tests use: ``fail_next``, ``drop_next``,
``delay_ms``, ``hold``/``release`` and the generation counters.
"""

from inuqueue.standin.app import create_standin_app
from inuqueue.standin.config import StandinConfig
from inuqueue.standin.state import STANDIN, Standin

__all__ = ["STANDIN", "Standin", "StandinConfig", "create_standin_app"]
