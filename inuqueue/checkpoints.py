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
VAES_PATH = "/sdapi/v1/sd-vae"
# Values of the webui's sd_vae option that name no file.
VAE_KEYWORDS = {"automatic": "Automatic", "none": "None"}
# Enough suggestions to spot a typo, few enough to read.
CLOSE_MATCHES = 5


class CheckpointUnknown(InuqueueError, ValueError):
    """No checkpoint (or VAE) of the webui goes by that name."""

    def __init__(self, name: str, close: list[str], kind: str = "checkpoint") -> None:
        hint = f" Close: {', '.join(close)}." if close else ""
        listing = MODELS_PATH if kind == "checkpoint" else VAES_PATH
        super().__init__(
            f"The webui has no {kind} {name!r}.{hint} GET {listing} lists them; "
            "give a name as listed there."
        )
        self.name = name
        self.close = close
        self.kind = kind


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


async def resolve(
    upstream: Upstream, checkpoint: str | None, vae: str | None
) -> dict[str, str]:
    """The override settings these names mean; CheckpointUnknown if one is not
    known, aiohttp errors if the webui cannot be asked."""
    overrides = {}
    if checkpoint is not None:
        models = await _listed(upstream, MODELS_PATH)
        overrides["sd_model_checkpoint"] = (
            checkpoint if models is None else match_checkpoint(models, checkpoint)
        )
    if vae is not None:
        vaes = await _listed(upstream, VAES_PATH)
        overrides["sd_vae"] = vae if vaes is None else match_vae(vaes, vae)
    return overrides


async def _listed(upstream: Upstream, path: str) -> list[dict[str, Any]] | None:
    """The list at `path`, or None where the webui has no such route.

    Forge lists VAEs under another route, and a webui without --api has none:
    the name then goes to the webui as it was given.
    """
    try:
        return await fetch_models(upstream, path)
    except aiohttp.ClientResponseError as exc:
        if exc.status == 404:
            return None
        raise


def match_vae(vaes: list[dict[str, Any]], name: str) -> str:
    """The sd_vae value `name` means: Automatic, None, or a listed file."""
    keyword = VAE_KEYWORDS.get(name.strip().lower())
    if keyword is not None:
        return keyword
    names = {str(v.get("model_name")): v for v in vaes if v.get("model_name")}
    for listed in names:
        if name in (listed, PurePath(listed).stem):
            return listed
    close = difflib.get_close_matches(name, list(names), n=CLOSE_MATCHES, cutoff=0.4)
    raise CheckpointUnknown(name, close, kind="VAE")


def set_override(body: dict[str, Any], option: str, value: str) -> None:
    """Make a webui body use this option value for its job (the webui's override)."""
    settings = dict(body.get("override_settings") or {})
    settings[option] = value
    body["override_settings"] = settings


def set_checkpoint(body: dict[str, Any], title: str) -> None:
    """Make a webui body use this checkpoint."""
    set_override(body, "sd_model_checkpoint", title)


async def fetch_models(
    upstream: Upstream, path: str = MODELS_PATH
) -> list[dict[str, Any]]:
    """The webui's checkpoint (or VAE) list; aiohttp errors if it cannot be asked."""
    async with upstream.control.get(upstream.url + path) as response:
        response.raise_for_status()
        models = await response.json(content_type=None)
    if not isinstance(models, list):
        raise aiohttp.ClientPayloadError(f"{path} did not answer a list")
    return [model for model in models if isinstance(model, dict)]
