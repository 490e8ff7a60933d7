"""The webui's v1.10 txt2img/img2img request models as data, validated like pydantic v1.

The webui builds its request models at start-up from the processing classes'
``__init__`` signatures (every such field ``Optional``), then appends a few extra
fields whose non-``None`` defaults make pydantic v1 reject ``null`` for them. The
coercion rules below are pydantic v1's (int() truncation, numbers turned into
strings, its boolean word lists), because clients rely on them without knowing.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from inuqueue.errors import InuqueueError

Kind = Literal["txt2img", "img2img"]
TypeName = Literal[
    "str", "int", "float", "bool", "dict", "dict[str, Any]", "list", "list[str]", "any"
]
Loc = tuple[str | int, ...]

# pydantic v1's bool_validator word lists; 1.0 matches 1 because they hash alike.
_BOOL_TRUE: frozenset[object] = frozenset({1, "1", "on", "t", "true", "y", "yes"})
_BOOL_FALSE: frozenset[object] = frozenset({0, "0", "off", "f", "false", "n", "no"})


class _Rejected(InuqueueError, ValueError):
    """A value that its field's type cannot accept (internal to this module)."""

    def __init__(
        self, msg: str, error_type: str, ctx: dict[str, Any] | None = None
    ) -> None:
        super().__init__(msg)
        self.msg = msg
        self.error_type = error_type
        self.ctx = ctx or {}


def _error(loc: Loc, msg: str, error_type: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": error_type}


def _untyped(value: object) -> Any:
    """Hand a JSON value to a builtin constructor, which decides what it accepts."""
    return value


def _to_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(_untyped(value))
    except (TypeError, ValueError, OverflowError) as exc:
        raise _Rejected("value is not a valid integer", "type_error.integer") from exc


def _to_float(value: object) -> float:
    if isinstance(value, float):
        return value
    try:
        return float(_untyped(value))
    except (TypeError, ValueError, OverflowError) as exc:
        raise _Rejected("value is not a valid float", "type_error.float") from exc


def _to_str(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):  # bool included: pydantic v1 gives "True"
        return str(value)
    raise _Rejected("str type expected", "type_error.str")


def _to_bool(value: object) -> bool:
    if value is True or value is False:
        return value
    probe = value.lower() if isinstance(value, str) else value
    try:
        if probe in _BOOL_TRUE:
            return True
        if probe in _BOOL_FALSE:
            return False
    except TypeError:  # unhashable (a list or dict) is simply not a boolean
        pass
    raise _Rejected("value could not be parsed to a boolean", "type_error.bool")


def _to_dict(value: object) -> dict[Any, Any]:
    if isinstance(value, dict):
        return value
    try:
        # pydantic v1 falls back to dict(), so a list of pairs is a dict too.
        return dict(_untyped(value))
    except (TypeError, ValueError) as exc:
        raise _Rejected("value is not a valid dict", "type_error.dict") from exc


def _to_list(value: object) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise _Rejected("value is not a valid list", "type_error.list")


_SCALARS = {"int": _to_int, "float": _to_float, "str": _to_str, "bool": _to_bool}


@dataclass(frozen=True)
class FieldSpec:
    """One model field: its pydantic type, its default, and whether null passes."""

    type: TypeName
    default: Any = None
    nullable: bool = True
    required: bool = False
    # Constraints of the few range-checked models (extras); None means unchecked.
    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    choices: tuple[object, ...] | None = None

    def coerce(self, value: object, loc: Loc) -> tuple[Any, list[dict[str, Any]]]:
        """Return the coerced value and the pydantic-v1 errors found at ``loc``."""
        if value is None:
            if self.nullable or self.type == "any":
                return None, []
            return None, [
                _error(
                    loc, "none is not an allowed value", "type_error.none.not_allowed"
                )
            ]
        try:
            coerced, errors = self._coerce_present(value, loc)
            coerced = self._check_constraints(coerced)
        except _Rejected as exc:
            return None, [_error(loc, exc.msg, exc.error_type) | exc.ctx]
        return coerced, errors

    def _check_constraints(self, value: Any) -> Any:
        """Apply Literal choices and number bounds; a choice comes back canonical."""
        if self.choices is not None:
            # Like a Literal lookup: 1.0 is the choice 1, and 1 is what is kept.
            matches = [choice for choice in self.choices if choice == value]
            if not matches:
                permitted = ", ".join(repr(choice) for choice in self.choices)
                ctx = {"ctx": {"given": value, "permitted": list(self.choices)}}
                message = f"unexpected value; permitted: {permitted}"
                raise _Rejected(message, "value_error.const", ctx)
            value = matches[0]
        bounds = (
            (self.gt, "greater than", "not_gt", operator.gt),
            (self.ge, "greater than or equal to", "not_ge", operator.ge),
            (self.le, "less than or equal to", "not_le", operator.le),
        )
        for bound, words, code, holds in bounds:
            if bound is not None and not holds(value, bound):
                raise _Rejected(
                    f"ensure this value is {words} {bound}",
                    f"value_error.number.{code}",
                    {"ctx": {"limit_value": bound}},
                )
        return value

    def _coerce_present(
        self, value: object, loc: Loc
    ) -> tuple[Any, list[dict[str, Any]]]:
        scalar = _SCALARS.get(self.type)
        if scalar is not None:
            return scalar(value), []
        if self.type == "dict":
            return _to_dict(value), []
        if self.type == "dict[str, Any]":
            return _coerce_str_keys(_to_dict(value), loc)
        if self.type == "list":
            return _to_list(value), []
        if self.type == "list[str]":
            return _coerce_str_items(_to_list(value), loc)
        return value, []


def _coerce_str_keys(raw: dict[Any, Any], loc: Loc) -> tuple[Any, list[dict[str, Any]]]:
    result: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for key, item in raw.items():
        try:
            result[_to_str(key)] = item
        except _Rejected as exc:
            errors.append(_error((*loc, "__key__"), exc.msg, exc.error_type))
    return (None if errors else result), errors


def _coerce_str_items(raw: list[Any], loc: Loc) -> tuple[Any, list[dict[str, Any]]]:
    item_spec = FieldSpec("str", nullable=False)
    result: list[Any] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        value, item_errors = item_spec.coerce(item, (*loc, index))
        result.append(value)
        errors.extend(item_errors)
    return (None if errors else result), errors


@dataclass(frozen=True)
class ValidationResult:
    """The coerced request (every field, defaults filled) or what was wrong with it."""

    values: dict[str, Any]
    errors: list[dict[str, Any]]


def validate_fields(
    fields: Mapping[str, FieldSpec],
    body: object,
    loc_prefix: Loc = ("body",),
    *,
    fill_defaults: bool = True,
) -> ValidationResult:
    """Validate a JSON body against ``fields`` the way FastAPI + pydantic v1 would.

    Without ``fill_defaults`` only the errors are wanted: absent fields are not
    filled in, which spares a copy of every default.
    """
    if body is None:
        missing = _error(loc_prefix, "field required", "value_error.missing")
        return ValidationResult({}, [missing])
    try:
        raw = _to_dict(body)
    except _Rejected as exc:
        return ValidationResult({}, [_error(loc_prefix, exc.msg, exc.error_type)])

    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for name, spec in fields.items():
        loc: Loc = (*loc_prefix, name)
        if name not in raw:
            if spec.required:
                errors.append(_error(loc, "field required", "value_error.missing"))
                continue
            if fill_defaults:
                # pydantic v1 copies defaults: a request never shares a mutable one.
                values[name] = copy.deepcopy(spec.default)
            continue
        value, field_errors = spec.coerce(raw[name], loc)
        values[name] = value
        errors.extend(field_errors)
    return ValidationResult(values, errors)


def validate_request(kind: Kind, body: object) -> ValidationResult:
    """Validate a txt2img or img2img body: unknown keys dropped, values coerced."""
    return validate_fields(FIELDS[kind], body)


def request_errors(kind: Kind, body: object) -> list[dict[str, Any]]:
    """The errors `validate_request` would find, without building the values."""
    return validate_fields(FIELDS[kind], body, fill_defaults=False).errors


def _nullable(type_name: TypeName, default: Any = None) -> FieldSpec:
    return FieldSpec(type_name, default, nullable=True)


def _strict(type_name: TypeName, default: Any) -> FieldSpec:
    return FieldSpec(type_name, default, nullable=False)


def _shared_fields(denoising_default: float | None) -> dict[str, FieldSpec]:
    """The processing base class's fields, in its order (every one Optional)."""
    return {
        "prompt": _nullable("str", ""),
        "negative_prompt": _nullable("str", ""),
        "styles": _nullable("list[str]"),
        "seed": _nullable("int", -1),
        "subseed": _nullable("int", -1),
        "subseed_strength": _nullable("float", 0),
        "seed_resize_from_h": _nullable("int", -1),
        "seed_resize_from_w": _nullable("int", -1),
        "sampler_name": _nullable("str"),
        "scheduler": _nullable("str"),
        "batch_size": _nullable("int", 1),
        "n_iter": _nullable("int", 1),
        "steps": _nullable("int", 50),
        "cfg_scale": _nullable("float", 7.0),
        "width": _nullable("int", 512),
        "height": _nullable("int", 512),
        "restore_faces": _nullable("bool"),
        "tiling": _nullable("bool"),
        "do_not_save_samples": _nullable("bool", False),
        "do_not_save_grid": _nullable("bool", False),
        "eta": _nullable("float"),
        "denoising_strength": _nullable("float", denoising_default),
        "s_min_uncond": _nullable("float"),
        "s_churn": _nullable("float"),
        "s_tmax": _nullable("float"),
        "s_tmin": _nullable("float"),
        "s_noise": _nullable("float"),
        "override_settings": _nullable("dict[str, Any]"),
        "override_settings_restore_afterwards": _nullable("bool", True),
        "refiner_checkpoint": _nullable("str"),
        "refiner_switch_at": _nullable("float"),
        "disable_extra_networks": _nullable("bool", False),
        "firstpass_image": _nullable("str"),
        "comments": _nullable("dict"),
    }


def _txt2img_fields() -> dict[str, FieldSpec]:
    # The base class's denoising default (None) wins the signature merge here.
    fields = _shared_fields(denoising_default=None)
    fields |= {
        "enable_hr": _nullable("bool", False),
        "firstphase_width": _nullable("int", 0),
        "firstphase_height": _nullable("int", 0),
        "hr_scale": _nullable("float", 2.0),
        "hr_upscaler": _nullable("str"),
        "hr_second_pass_steps": _nullable("int", 0),
        "hr_resize_x": _nullable("int", 0),
        "hr_resize_y": _nullable("int", 0),
        "hr_checkpoint_name": _nullable("str"),
        "hr_sampler_name": _nullable("str"),
        "hr_scheduler": _nullable("str"),
        "hr_prompt": _nullable("str", ""),
        "hr_negative_prompt": _nullable("str", ""),
        "force_task_id": _nullable("str"),
        "sampler_index": _strict("str", "Euler"),
        "script_name": _nullable("str"),
        "script_args": _strict("list", []),
        "send_images": _strict("bool", True),
        "save_images": _strict("bool", False),
        "alwayson_scripts": _strict("dict", {}),
        "infotext": _nullable("str"),
    }
    return fields


def _img2img_fields() -> dict[str, FieldSpec]:
    # img2img re-declares init_images, denoising_strength and mask among its extra
    # fields: they keep their place, but denoising_strength becomes a plain float.
    fields = _shared_fields(denoising_default=0.75)
    fields["denoising_strength"] = _strict("float", 0.75)
    fields |= {
        "init_images": _nullable("list"),
        "resize_mode": _nullable("int", 0),
        "image_cfg_scale": _nullable("float"),
        "mask": _nullable("str"),
        "mask_blur_x": _nullable("int", 4),
        "mask_blur_y": _nullable("int", 4),
        "mask_blur": _nullable("int"),
        "mask_round": _nullable("bool", True),
        "inpainting_fill": _nullable("int", 0),
        "inpaint_full_res": _nullable("bool", True),
        "inpaint_full_res_padding": _nullable("int", 0),
        "inpainting_mask_invert": _nullable("int", 0),
        "initial_noise_multiplier": _nullable("float"),
        "latent_mask": _nullable("str"),
        "force_task_id": _nullable("str"),
        "sampler_index": _strict("str", "Euler"),
        "include_init_images": _strict("bool", False),
        "script_name": _nullable("str"),
        "script_args": _strict("list", []),
        "send_images": _strict("bool", True),
        "save_images": _strict("bool", False),
        "alwayson_scripts": _strict("dict", {}),
        "infotext": _nullable("str"),
    }
    return fields


FIELDS: Mapping[Kind, Mapping[str, FieldSpec]] = MappingProxyType(
    {
        "txt2img": MappingProxyType(_txt2img_fields()),
        "img2img": MappingProxyType(_img2img_fields()),
    }
)
