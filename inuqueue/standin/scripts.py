"""The webui's scripts: selectable ones (script_name) and always-on ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Script:
    """A webui script: selectable ones go in script_name, the others are always on."""

    title: str
    alwayson: bool
    args: tuple[dict[str, Any], ...] = field(default=())

    def info(self, *, is_img2img: bool) -> dict[str, Any]:
        """The webui's ScriptInfo shape."""
        return {
            "name": self.title.lower(),
            "is_alwayson": self.alwayson,
            "is_img2img": is_img2img,
            "args": list(self.args),
        }


def _arg(label: str, value: object, *, minimum: float | None = None) -> dict[str, Any]:
    return {
        "label": label,
        "value": value,
        "minimum": minimum,
        "maximum": None,
        "step": None,
        "choices": None,
    }


_ALWAYSON = (
    Script("Refiner", True, (_arg("Refiner", False), _arg("Checkpoint", ""))),
    Script("Seed", True, (_arg("Seed", -1), _arg("Extra", False))),
    Script("Hypertile", True),
    Script("Extra options", True),
)
_BOTH_SELECTABLE = (
    Script(
        "Prompt matrix", False, (_arg("Put variable parts at start of prompt", False),)
    ),
    Script("Prompts from file or textbox", False, (_arg("List of prompt inputs", ""),)),
    Script("X/Y/Z plot", False, (_arg("X type", "Nothing"),)),
)
SCRIPTS: dict[str, tuple[Script, ...]] = {
    "txt2img": (*_ALWAYSON, *_BOTH_SELECTABLE),
    "img2img": (
        *_ALWAYSON,
        Script("Soft Inpainting", True, (_arg("Soft inpainting", False),)),
        Script("img2img alternative test", False),
        Script("Loopback", False, (_arg("Loops", 4, minimum=1),)),
        Script("Outpainting mk2", False, (_arg("Pixels to expand", 128, minimum=8),)),
        Script("Poor man's outpainting", False, (_arg("Pixels to expand", 128),)),
        *_BOTH_SELECTABLE,
        Script(
            "SD upscale", False, (_arg("Tile overlap", 64), _arg("Scale Factor", 2.0))
        ),
    ),
}


def find_script(kind: str, title: str) -> Script | None:
    """Match a script title case-insensitively, as the webui does."""
    wanted = title.lower()
    return next((s for s in SCRIPTS[kind] if s.title.lower() == wanted), None)
