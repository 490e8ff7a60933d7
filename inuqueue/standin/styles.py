"""Saved prompt styles: merged into the prompts, and found again in infotexts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PromptStyle:
    """A saved style: its text is merged into the prompts of a request naming it."""

    name: str
    prompt: str
    negative_prompt: str = ""

    def as_json(self) -> dict[str, Any]:
        """The webui's PromptStyleItem shape."""
        return {
            "name": self.name,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
        }


PROMPT_STYLES: tuple[PromptStyle, ...] = (
    PromptStyle(
        "anime",
        "anime artwork of {prompt}, anime style, key visual, vibrant, studio anime",
        "photo, deformed, black and white, realism, disfigured, low contrast",
    ),
    PromptStyle("cinematic", "cinematic still, shallow depth of field, film grain"),
    PromptStyle("sharp", "", "blurry, lowres, jpeg artifacts"),
)
STYLES_BY_NAME = {style.name: style for style in PROMPT_STYLES}


def merge_style(style_text: str, prompt: str) -> str:
    """Merge one style's text into a prompt: "{prompt}" placeholder or ", " join."""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, styles: list[str], *, negative: bool) -> str:
    """Apply the named styles in order; unknown names merge as empty styles."""
    for name in styles:
        style = STYLES_BY_NAME.get(name, PromptStyle(name, ""))
        prompt = merge_style(
            style.negative_prompt if negative else style.prompt, prompt
        )
    return prompt


def _unmerge(style_text: str, prompt: str) -> tuple[bool, str]:
    """Undo one style's merge into a prompt, if the prompt shows it."""
    stripped, style_text = prompt.strip(), style_text.strip()
    if "{prompt}" in style_text:
        left, _, right = style_text.partition("{prompt}")
        if stripped.startswith(left) and stripped.endswith(right):
            return True, stripped[len(left) : len(stripped) - len(right)]
        return False, prompt
    if not stripped.endswith(style_text):
        return False, prompt
    rest = stripped[: len(stripped) - len(style_text)]
    return True, rest[:-2] if rest.endswith(", ") else rest


def extract_styles(prompt: str, negative: str) -> tuple[list[str], str, str]:
    """Find the saved styles a prompt pair was built from, and the bare prompts."""
    found: list[PromptStyle] = []
    candidates = list(PROMPT_STYLES)
    while True:
        for style in candidates:
            if not style.prompt and not style.negative_prompt:
                continue
            ok_positive, bare_prompt = _unmerge(style.prompt, prompt)
            ok_negative, bare_negative = _unmerge(style.negative_prompt, negative)
            if ok_positive and ok_negative:
                found.append(style)
                candidates.remove(style)
                prompt, negative = bare_prompt, bare_negative
                break
        else:
            return [style.name for style in reversed(found)], prompt, negative
