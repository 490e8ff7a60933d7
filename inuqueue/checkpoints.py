"""Checkpoint names resolved against the webui's own list, as the webui matches them.

The webui drops an unknown `sd_model_checkpoint` override without a word and renders
with whatever model is loaded; inuqueue refuses the name instead, with the closest
ones it knows.
"""

from __future__ import annotations

import difflib
from pathlib import PurePath
from typing import Any

import aiohttp

from inuqueue.errors import InuqueueError
from inuqueue.upstream import Upstream

MODELS_PATH = "/sdapi/v1/sd-models"
# Enough suggestions to spot a typo, few enough to read.
CLOSE_MATCHES = 5


class CheckpointUnknown(InuqueueError, ValueError):
    """No checkpoint of the webui goes by that name."""

    def __init__(self, name: str, close: list[str]) -> None:
        hint = f" Close: {', '.join(close)}." if close else ""
        super().__init__(
            f"The webui has no checkpoint {name!r}.{hint} GET /sdapi/v1/sd-models "
            "lists them; give a title, a model name or a hash."
        )
        self.name = name
        self.close = close


def _aliases(model: dict[str, Any]) -> set[str]:
    title = str(model.get("title") or "")
    names = {title, title.rsplit(" [", 1)[0]}
    for key in ("model_name", "hash", "sha256"):
        if model.get(key):
            names.add(str(model[key]))
    if model.get("filename"):
        path = PurePath(str(model["filename"]).replace("\\", "/"))
        names |= {path.name, path.stem}
    return {name for name in names if name}


def match_checkpoint(models: list[dict[str, Any]], name: str) -> str:
    """The title of the checkpoint `name` means: an alias, else a part of a title."""
    for model in models:
        if name in _aliases(model):
            return str(model["title"])
    # As the webui does: the shortest title that contains the name.
    containing = sorted(
        (str(m["title"]) for m in models if name in str(m.get("title", ""))), key=len
    )
    if containing:
        return containing[0]

    known = sorted({alias for model in models for alias in _aliases(model)})
    close = difflib.get_close_matches(name, known, n=CLOSE_MATCHES, cutoff=0.4)
    titles = [str(m["title"]) for m in models if _aliases(m) & set(close)]
    raise CheckpointUnknown(name, titles[:CLOSE_MATCHES])


def set_checkpoint(body: dict[str, Any], title: str) -> None:
    """Make a webui body use this checkpoint (the webui's own override)."""
    settings = dict(body.get("override_settings") or {})
    settings["sd_model_checkpoint"] = title
    body["override_settings"] = settings


async def fetch_models(upstream: Upstream) -> list[dict[str, Any]]:
    """The webui's checkpoint list; aiohttp errors if it cannot be asked."""
    async with upstream.control.get(upstream.url + MODELS_PATH) as response:
        response.raise_for_status()
        models = await response.json(content_type=None)
    if not isinstance(models, list):
        raise aiohttp.ClientPayloadError("the checkpoint list is not a list")
    return [model for model in models if isinstance(model, dict)]
