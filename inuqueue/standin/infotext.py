"""Infotexts: the three-line parameter text a picture carries, written and read back.

Format: the prompt, then ``Negative prompt: ...`` (left out when empty), then one
line of ``Key: value`` pairs joined by ", ", where a value holding ``,``, ``:`` or a
newline is written as a JSON string.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from typing import Any

from inuqueue.standin.catalog import resolve_sampler
from inuqueue.standin.styles import extract_styles

# A key starts with a word character; a value is a JSON string or runs to a comma.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")
_NEGATIVE_LABEL = "Negative prompt:"

# What parsing fills in for keys an infotext leaves out (the webui's defaults).
_PARSE_DEFAULTS: dict[str, Any] = {
    "Clip skip": "1",
    "Hires resize-1": 0,
    "Hires resize-2": 0,
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
    "Emphasis": "Original",
    "Refiner switch by sampling steps": False,
}

# Infotext keys that turn into override_settings entries, and the setting each sets.
_SETTING_KEYS = (
    ("Clip skip", "CLIP_stop_at_last_layers"),
    ("ENSD", "eta_noise_seed_delta"),
    ("RNG", "randn_source"),
    ("Emphasis", "emphasis"),
    ("VAE Encoder", "sd_vae_encode_method"),
    ("VAE Decoder", "sd_vae_decode_method"),
    ("Model hash", "sd_model_checkpoint"),
)


def quote(value: object) -> str:
    """Write a value so that the parameter line stays parseable."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def format_infotext(
    prompt: str, negative_prompt: str, params: dict[str, object]
) -> str:
    """Join prompt, negative prompt and the non-None parameters into an infotext."""
    line = ", ".join(
        key if key == value else f"{key}: {quote(value)}"
        for key, value in params.items()
        if value is not None
    )
    negative = f"\n{_NEGATIVE_LABEL} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def parse_infotext(text: str) -> dict[str, Any]:
    """Parse an infotext into the webui's parameters dict (png-info, infotext field)."""
    *lines, last_line = text.strip().split("\n")
    if len(_PARAM.findall(last_line)) < 3:
        lines.append(last_line)
        last_line = ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for raw_line in lines:
        line = raw_line.strip()
        if line.startswith(_NEGATIVE_LABEL):
            negative_lines.append(line[len(_NEGATIVE_LABEL) :].strip())
        elif negative_lines:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)
    styles, prompt, negative = extract_styles(
        "\n".join(prompt_lines), "\n".join(negative_lines)
    )
    result: dict[str, Any] = {"Prompt": prompt, "Negative prompt": negative}
    if styles:
        result["Styles array"] = styles
    for key, raw_value in _PARAM.findall(last_line):
        value = raw_value
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            with contextlib.suppress(ValueError):  # kept as it is, like upstream
                value = json.loads(value)
        size = _IMAGE_SIZE.match(value)
        if size is not None:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    for key, default in _PARSE_DEFAULTS.items():
        result.setdefault(key, default)
    return result


def _hires_enabled(params: dict[str, Any]) -> bool:
    hires_keys = ("Hires upscale", "Hires upscaler", "Hires resize-1")
    return "Denoising strength" in params and any(key in params for key in hires_keys)


# Request field -> (target type, how to read it from parsed parameters).
_Reader = Callable[[dict[str, Any]], object]
_SHARED_READERS: dict[str, tuple[type, _Reader]] = {
    "prompt": (str, lambda p: p.get("Prompt")),
    "negative_prompt": (str, lambda p: p.get("Negative prompt")),
    "styles": (list, lambda p: p.get("Styles array")),
    "steps": (int, lambda p: p.get("Steps")),
    "sampler_name": (
        str,
        lambda p: resolve_sampler(p.get("Sampler"), p.get("Schedule type"))[0],
    ),
    "scheduler": (
        str,
        lambda p: resolve_sampler(p.get("Sampler"), p.get("Schedule type"))[1],
    ),
    "cfg_scale": (float, lambda p: p.get("CFG scale")),
    "seed": (int, lambda p: p.get("Seed")),
    "subseed": (int, lambda p: p.get("Variation seed")),
    "subseed_strength": (float, lambda p: p.get("Variation seed strength")),
    "width": (int, lambda p: p.get("Size-1")),
    "height": (int, lambda p: p.get("Size-2")),
    "batch_size": (int, lambda p: p.get("Batch size")),
    "denoising_strength": (float, lambda p: p.get("Denoising strength")),
}
_TXT2IMG_READERS: dict[str, tuple[type, _Reader]] = {
    "enable_hr": (bool, _hires_enabled),
    "hr_scale": (float, lambda p: p.get("Hires upscale")),
    "hr_upscaler": (str, lambda p: p.get("Hires upscaler")),
    "hr_second_pass_steps": (int, lambda p: p.get("Hires steps")),
    "hr_resize_x": (int, lambda p: p.get("Hires resize-1")),
    "hr_resize_y": (int, lambda p: p.get("Hires resize-2")),
    "hr_prompt": (str, lambda p: p.get("Hires prompt")),
    "hr_negative_prompt": (str, lambda p: p.get("Hires negative prompt")),
}


def _cast_setting(default: object, value: Any) -> object:
    """Convert an infotext value to the type of the setting's default."""
    if isinstance(default, bool):
        return False if value == "False" else bool(value)
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, str):
        return str(value)
    return value


def apply_infotext(
    kind: str,
    values: dict[str, Any],
    sent_keys: set[str],
    options: dict[str, Any],
) -> None:
    """Fill the fields a request left out from its ``infotext``, like the webui."""
    if not values.get("infotext"):
        return
    params = parse_infotext(str(values["infotext"]))
    readers = _SHARED_READERS | (_TXT2IMG_READERS if kind == "txt2img" else {})
    for field_name, (target_type, read) in readers.items():
        if field_name in sent_keys:
            continue
        value = read(params)
        if value is None:
            continue
        if not isinstance(value, target_type):
            value = target_type(value)  # "7.5" for an int field fails, as upstream
        values[field_name] = value

    if values.get("override_settings") is None:
        values["override_settings"] = {}
    overrides: dict[str, Any] = values["override_settings"]
    for infotext_key, setting in _SETTING_KEYS:
        value = params.get(infotext_key)
        if value is None or setting in overrides:
            continue
        if setting == "sd_model_checkpoint" and options.get(
            "disable_weights_auto_swap"
        ):
            continue
        value = _cast_setting(options.get(setting), value)
        if value != options.get(setting):
            overrides[setting] = value
