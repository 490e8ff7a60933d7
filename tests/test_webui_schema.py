"""The webui request models: pydantic-v1 coercion, defaults, nulls and error shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inuqueue.webui_schema import FIELDS, FieldSpec, validate_fields, validate_request

# What webuiapi 0.9.17 posts for txt2img(prompt, negative_prompt, seed=1003,
# styles=["anime"], cfg_scale=7), captured from the library itself.
FIXTURES = Path(__file__).parent / "fixtures"


def _error(loc: list[Any], msg: str, error_type: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": error_type}


def test_webuiapi_defaults_fixture_is_accepted_unchanged() -> None:
    body = json.loads((FIXTURES / "txt2img-webuiapi-defaults.json").read_text())

    result = validate_request("txt2img", body)

    assert result.errors == []
    assert {key: result.values[key] for key in body} == body
    assert result.values["hr_scale"] == 2.0 and isinstance(
        result.values["hr_scale"], float
    )


def test_agent_scheduler_extra_keys_are_dropped() -> None:
    body = json.loads((FIXTURES / "queue-txt2img-agent-scheduler.json").read_text())

    result = validate_request("txt2img", body)

    assert result.errors == []
    assert "checkpoint" not in result.values and "callback_url" not in result.values
    assert result.values["scheduler"] == "karras"


def test_empty_body_fills_every_default() -> None:
    result = validate_request("txt2img", {})

    assert result.errors == []
    assert list(result.values) == list(FIELDS["txt2img"])
    assert result.values["sampler_index"] == "Euler"
    assert result.values["steps"] == 50
    assert result.values["cfg_scale"] == 7.0
    assert result.values["denoising_strength"] is None  # the signature-merge quirk
    assert result.values["script_args"] == []
    assert result.values["alwayson_scripts"] == {}
    assert result.values["send_images"] is True
    assert result.values["save_images"] is False


def test_img2img_defaults_differ_where_the_webui_differs() -> None:
    values = validate_request("img2img", {}).values

    assert values["denoising_strength"] == 0.75
    assert values["init_images"] is None
    assert values["include_init_images"] is False
    assert values["mask_blur_x"] == 4
    assert "enable_hr" not in values
    assert "init_images" not in FIELDS["txt2img"]


def test_mutable_defaults_are_not_shared_between_requests() -> None:
    first = validate_request("txt2img", {}).values
    first["script_args"].append("mutated")

    assert validate_request("txt2img", {}).values["script_args"] == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3.7, 3), (-3.7, -3), ("12", 12), (" 7 ", 7), (True, 1), (20, 20)],
)
def test_int_fields_truncate_and_parse_like_pydantic_v1(
    value: object, expected: int
) -> None:
    assert validate_request("txt2img", {"steps": value}).values["steps"] == expected


@pytest.mark.parametrize("value", ["abc", "3.7", [1], {"a": 1}, float("inf")])
def test_int_fields_reject_what_int_cannot_read(value: object) -> None:
    result = validate_request("txt2img", {"steps": value})

    assert result.errors == [
        _error(["body", "steps"], "value is not a valid integer", "type_error.integer")
    ]


def test_float_fields_accept_numbers_and_numeric_strings() -> None:
    values = validate_request("txt2img", {"cfg_scale": 5, "hr_scale": "1.5"}).values

    assert values["cfg_scale"] == 5.0 and isinstance(values["cfg_scale"], float)
    assert values["hr_scale"] == 1.5


def test_float_fields_reject_words() -> None:
    result = validate_request("txt2img", {"cfg_scale": "high"})

    assert result.errors == [
        _error(["body", "cfg_scale"], "value is not a valid float", "type_error.float")
    ]


def test_numbers_become_strings_for_str_fields() -> None:
    values = validate_request("txt2img", {"prompt": 5, "negative_prompt": 1.5}).values

    assert values["prompt"] == "5"
    assert values["negative_prompt"] == "1.5"


def test_str_fields_reject_containers() -> None:
    result = validate_request("txt2img", {"prompt": ["a"]})

    assert result.errors == [
        _error(["body", "prompt"], "str type expected", "type_error.str")
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("Yes", True),
        ("on", True),
        (1, True),
        (1.0, True),
        ("t", True),
        ("false", False),
        ("off", False),
        ("N", False),
        (0, False),
    ],
)
def test_bool_fields_follow_pydantic_v1_words(value: object, expected: bool) -> None:
    assert (
        validate_request("txt2img", {"enable_hr": value}).values["enable_hr"]
        is expected
    )


@pytest.mark.parametrize("value", [2, "maybe", " true", [True]])
def test_bool_fields_reject_other_values(value: object) -> None:
    result = validate_request("txt2img", {"enable_hr": value})

    assert result.errors == [
        _error(
            ["body", "enable_hr"],
            "value could not be parsed to a boolean",
            "type_error.bool",
        )
    ]


def test_null_is_accepted_on_optional_fields() -> None:
    body = {"prompt": None, "steps": None, "styles": None, "override_settings": None}

    result = validate_request("txt2img", body)

    assert result.errors == []
    assert all(result.values[key] is None for key in body)


@pytest.mark.parametrize(
    "field_name",
    ["sampler_index", "send_images", "save_images", "script_args", "alwayson_scripts"],
)
def test_null_is_rejected_on_the_appended_fields(field_name: str) -> None:
    result = validate_request("txt2img", {field_name: None})

    assert result.errors == [
        _error(
            ["body", field_name],
            "none is not an allowed value",
            "type_error.none.not_allowed",
        )
    ]


def test_img2img_also_rejects_null_on_its_redeclared_fields() -> None:
    body = {"denoising_strength": None, "include_init_images": None, "mask": None}

    result = validate_request("img2img", body)

    assert [error["loc"] for error in result.errors] == [
        ["body", "denoising_strength"],
        ["body", "include_init_images"],
    ]


@pytest.mark.parametrize("body", [[1, 2], "text", 5, True])
def test_a_body_that_is_not_an_object_is_not_a_valid_dict(body: object) -> None:
    result = validate_request("txt2img", body)

    assert result.errors == [
        _error(["body"], "value is not a valid dict", "type_error.dict")
    ]
    assert result.values == {}


def test_a_list_of_pairs_is_a_dict_for_pydantic_v1() -> None:
    result = validate_request("txt2img", [["steps", 3]])

    assert result.errors == []
    assert result.values["steps"] == 3


def test_a_null_body_is_missing() -> None:
    result = validate_request("txt2img", None)

    assert result.errors == [_error(["body"], "field required", "value_error.missing")]


@pytest.mark.parametrize(
    ("field_name", "value", "msg", "error_type"),
    [
        ("override_settings", "x", "value is not a valid dict", "type_error.dict"),
        ("alwayson_scripts", 3, "value is not a valid dict", "type_error.dict"),
        ("comments", [1], "value is not a valid dict", "type_error.dict"),
        ("styles", "anime", "value is not a valid list", "type_error.list"),
        ("script_args", {"a": 1}, "value is not a valid list", "type_error.list"),
    ],
)
def test_container_fields_check_their_container_type(
    field_name: str, value: object, msg: str, error_type: str
) -> None:
    result = validate_request("txt2img", {field_name: value})

    assert result.errors == [_error(["body", field_name], msg, error_type)]


def test_init_images_must_be_a_list() -> None:
    result = validate_request("img2img", {"init_images": "iVBOR"})

    assert result.errors == [
        _error(["body", "init_images"], "value is not a valid list", "type_error.list")
    ]


def test_styles_items_are_coerced_and_checked_one_by_one() -> None:
    assert validate_request("txt2img", {"styles": ["a", 5]}).values["styles"] == [
        "a",
        "5",
    ]

    result = validate_request("txt2img", {"styles": ["a", None, ["b"]]})

    assert result.errors == [
        _error(
            ["body", "styles", 1],
            "none is not an allowed value",
            "type_error.none.not_allowed",
        ),
        _error(["body", "styles", 2], "str type expected", "type_error.str"),
    ]


def test_every_error_is_reported_in_field_order() -> None:
    result = validate_request(
        "txt2img", {"steps": "x", "prompt": [], "send_images": None}
    )

    assert [error["loc"][1] for error in result.errors] == [
        "prompt",
        "steps",
        "send_images",
    ]


def test_no_ranges_are_checked() -> None:
    body = {
        "steps": 0,
        "width": 7,
        "cfg_scale": -3,
        "n_iter": -1,
        "denoising_strength": 9,
    }

    result = validate_request("txt2img", body)

    assert result.errors == []
    assert {key: result.values[key] for key in body} == body


def test_field_specs_say_type_default_and_nullability() -> None:
    spec = FIELDS["txt2img"]["sampler_index"]

    assert (spec.type, spec.default, spec.nullable) == ("str", "Euler", False)
    assert FIELDS["txt2img"]["styles"] == FieldSpec("list[str]", None, nullable=True)
    assert FIELDS["img2img"]["init_images"].type == "list"


def test_range_constraints_use_pydantic_v1_messages() -> None:
    fields = {
        "visibility": FieldSpec("float", 0, nullable=False, ge=0, le=1),
        "factor": FieldSpec("float", 2, nullable=False, gt=0),
        "mode": FieldSpec("any", 0, nullable=False, choices=(0, 1)),
    }

    result = validate_fields(fields, {"visibility": 1.5, "factor": 0, "mode": 3})

    assert result.errors == [
        {
            "loc": ["body", "visibility"],
            "msg": "ensure this value is less than or equal to 1",
            "type": "value_error.number.not_le",
            "ctx": {"limit_value": 1},
        },
        {
            "loc": ["body", "factor"],
            "msg": "ensure this value is greater than 0",
            "type": "value_error.number.not_gt",
            "ctx": {"limit_value": 0},
        },
        {
            "loc": ["body", "mode"],
            "msg": "unexpected value; permitted: 0, 1",
            "type": "value_error.const",
            "ctx": {"given": 3, "permitted": [0, 1]},
        },
    ]


def test_required_fields_are_reported_missing() -> None:
    fields = {"image": FieldSpec("str", nullable=False, required=True)}

    result = validate_fields(fields, {})

    assert result.errors == [
        _error(["body", "image"], "field required", "value_error.missing")
    ]


def test_override_settings_keys_become_strings() -> None:
    values = validate_request("txt2img", {"override_settings": [[1, "x"]]}).values

    assert values["override_settings"] == {"1": "x"}


def test_the_errors_alone_are_those_of_the_full_validation() -> None:
    from inuqueue.webui_schema import request_errors

    bodies: list[object] = [
        {},
        {"steps": "many", "width": None, "script_args": None, "styles": "x"},
        [1, 2],
        None,
        {"init_images": "not a list", "mask": 5},
    ]
    for kind in ("txt2img", "img2img"):
        for body in bodies:
            assert request_errors(kind, body) == validate_request(kind, body).errors
