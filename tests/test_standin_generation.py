"""txt2img/img2img on the stand-in: reply shapes, pictures, seeds, scripts, inputs."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from inuqueue.standin import STANDIN, StandinConfig, create_standin_app
from inuqueue.standin.outputs import encode_reply
from inuqueue.standin.webhttp import encode_json

Client = TestClient[web.Request, web.Application]
# What webuiapi 0.9.17 posts for txt2img(prompt, negative_prompt, seed=1003,
# styles=["anime"], cfg_scale=7), captured from the library itself.
FIXTURES = Path(__file__).parent / "fixtures"
INFO_KEYS = {
    "prompt",
    "all_prompts",
    "negative_prompt",
    "all_negative_prompts",
    "seed",
    "all_seeds",
    "subseed",
    "all_subseeds",
    "subseed_strength",
    "width",
    "height",
    "sampler_name",
    "cfg_scale",
    "steps",
    "batch_size",
    "restore_faces",
    "face_restoration_model",
    "sd_model_name",
    "sd_model_hash",
    "sd_vae_name",
    "sd_vae_hash",
    "seed_resize_from_w",
    "seed_resize_from_h",
    "denoising_strength",
    "extra_generation_params",
    "index_of_first_image",
    "infotexts",
    "styles",
    "job_timestamp",
    "clip_skip",
    "is_using_inpainting_conditioning",
    "version",
}


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_standin_app(StandinConfig(step_ms=0)))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG into chunks, checking the signature and every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        payload = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + payload)
        chunks.append((kind, payload))
        offset += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    return chunks


def png_size(data: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", png_chunks(data)[0][1][:8])
    return width, height


def png_parameters(data: bytes) -> str:
    for kind, payload in png_chunks(data):
        key, _, text = payload.partition(b"\0")
        if kind == b"tEXt" and key == b"parameters":
            return text.decode("latin-1")
        if kind == b"iTXt" and key == b"parameters":
            return text[4:].decode("utf-8")  # flags, method, empty language and key
    raise AssertionError("no parameters text chunk")


def png_pixels(data: bytes) -> bytes:
    """Decompressed scanlines, for comparing the picture itself."""
    return zlib.decompress(
        b"".join(p for kind, p in png_chunks(data) if kind == b"IDAT")
    )


async def txt2img(client: Client, **body: Any) -> dict[str, Any]:
    response = await client.post("/sdapi/v1/txt2img", json=body)
    assert response.status == 200, await response.text()
    reply: dict[str, Any] = await response.json()
    return reply


def decoded(reply: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(image) for image in reply["images"]]


async def test_the_webuiapi_fixture_generates_one_picture(client: Client) -> None:
    body = json.loads((FIXTURES / "txt2img-webuiapi-defaults.json").read_text())

    reply = await txt2img(client, **body)

    assert set(reply) == {"images", "parameters", "info"}
    assert reply["images"][0].startswith("iVBORw0KGgo")
    assert png_size(decoded(reply)[0]) == (512, 512)
    info = json.loads(reply["info"])
    assert set(info) == INFO_KEYS
    assert info["seed"] == 1003 and info["sampler_name"] == "Euler a"
    assert info["styles"] == ["anime"]
    assert info["prompt"].startswith("anime artwork of cute squirrel")
    assert info["job_timestamp"].isdigit() and len(info["job_timestamp"]) == 14


async def test_infotext_is_in_the_png_and_in_info(client: Client) -> None:
    reply = await txt2img(
        client, prompt="a fox", negative_prompt="blurry", seed=7, steps=3
    )

    text = png_parameters(decoded(reply)[0])

    assert text == json.loads(reply["info"])["infotexts"][0]
    prompt, negative, params = text.split("\n")
    assert prompt == "a fox"
    assert negative == "Negative prompt: blurry"
    assert params == (
        "Steps: 3, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, Seed: 7, "
        "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
        "Version: v1.10.1"
    )


async def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(
    client: Client,
) -> None:
    first = decoded(await txt2img(client, prompt="x", seed=42, steps=2))
    again = decoded(await txt2img(client, prompt="x", seed=42, steps=2))
    other = decoded(await txt2img(client, prompt="x", seed=43, steps=2))

    assert first == again
    assert png_pixels(first[0]) != png_pixels(other[0])


async def test_seed_minus_one_is_resolved_and_seeds_count_up(client: Client) -> None:
    reply = await txt2img(client, seed=-1, batch_size=2, n_iter=3, steps=1)

    info = json.loads(reply["info"])
    assert len(reply["images"]) == 6
    assert 0 <= info["seed"] < 4_294_967_294
    assert info["all_seeds"] == [info["seed"] + i for i in range(6)]
    assert len(info["infotexts"]) == 6
    assert f"Seed: {info['seed'] + 5}," in info["infotexts"][5]


async def test_variation_strength_keeps_one_seed_for_all(client: Client) -> None:
    reply = await txt2img(
        client, seed=5, subseed=10, subseed_strength=0.5, batch_size=3
    )

    info = json.loads(reply["info"])
    assert info["all_seeds"] == [5, 5, 5]
    assert info["all_subseeds"] == [10, 11, 12]
    assert "Variation seed: 11, Variation seed strength: 0.5" in info["infotexts"][1]


async def test_sizes_are_floored_to_multiples_of_eight(client: Client) -> None:
    reply = await txt2img(client, width=500, height=333, steps=1)

    assert png_size(decoded(reply)[0]) == (496, 328)
    assert json.loads(reply["info"])["width"] == 500


async def test_hires_scales_the_picture_and_keeps_the_base_size_in_info(
    client: Client,
) -> None:
    reply = await txt2img(
        client, enable_hr=True, hr_scale=1.5, denoising_strength=0.5, steps=2
    )

    assert png_size(decoded(reply)[0]) == (768, 768)
    info = json.loads(reply["info"])
    assert info["extra_generation_params"]["Hires upscale"] == 1.5
    assert "Denoising strength: 0.5" in info["infotexts"][0]


async def test_hires_resize_fits_and_crops_to_the_target(client: Client) -> None:
    body = {"width": 512, "height": 768, "hr_resize_x": 1024, "hr_resize_y": 1024}
    reply = await txt2img(
        client, enable_hr=True, denoising_strength=0.4, steps=1, **body
    )

    assert png_size(decoded(reply)[0]) == (1024, 1024)


async def test_hires_without_denoising_strength_fails_like_the_webui(
    client: Client,
) -> None:
    response = await client.post(
        "/sdapi/v1/txt2img", json={"enable_hr": True, "steps": 1}
    )

    assert response.status == 500
    body = await response.json()
    assert body["error"] == "TypeError" and body["detail"] == "" and body["body"] == ""


async def test_send_images_false_returns_no_images(client: Client) -> None:
    reply = await txt2img(client, send_images=False, steps=1)

    assert reply["images"] == []
    assert len(json.loads(reply["info"])["infotexts"]) == 1


async def test_save_images_puts_a_grid_first(client: Client) -> None:
    reply = await txt2img(
        client, save_images=True, batch_size=2, n_iter=2, steps=1, seed=1
    )

    images = decoded(reply)
    info = json.loads(reply["info"])
    assert len(images) == 5
    assert info["index_of_first_image"] == 1
    assert png_size(images[0]) == (1024, 1024)
    assert [png_size(image) for image in images[1:]] == [(512, 512)] * 4
    assert png_parameters(images[0]) == info["infotexts"][0]


async def test_a_single_saved_image_gets_no_grid(client: Client) -> None:
    reply = await txt2img(client, save_images=True, steps=1)

    assert len(reply["images"]) == 1
    assert json.loads(reply["info"])["index_of_first_image"] == 0


@pytest.mark.parametrize(
    ("body", "sampler", "schedule"),
    [
        ({}, "Euler", "Automatic"),
        ({"sampler_name": "DPM++ 2M Karras"}, "DPM++ 2M", "Karras"),
        ({"sampler_index": "Euler a"}, "Euler a", "Automatic"),
        ({"sampler_name": "k_euler_a"}, "DPM++ 2M", "Karras"),
        ({"sampler_name": "UniPC", "scheduler": "karras"}, "UniPC", "Karras"),
    ],
)
async def test_sampler_names_resolve_like_the_webui(
    client: Client, body: dict[str, Any], sampler: str, schedule: str
) -> None:
    reply = await txt2img(client, steps=1, **body)

    info = json.loads(reply["info"])
    assert info["sampler_name"] == sampler
    assert f"Sampler: {sampler}, Schedule type: {schedule}," in info["infotexts"][0]
    assert reply["parameters"]["sampler_index"] == body.get("sampler_index", "Euler")


async def test_parameters_echo_every_field_with_defaults(client: Client) -> None:
    reply = await txt2img(client, prompt="x", steps="4", unknown_key=1)

    parameters = reply["parameters"]
    assert parameters["steps"] == 4 and parameters["prompt"] == "x"
    assert (
        parameters["sampler_name"] is None and parameters["denoising_strength"] is None
    )
    assert "unknown_key" not in parameters
    assert len(parameters) == 55


async def test_override_settings_picks_the_model_for_one_job(client: Client) -> None:
    xl = "sd_xl_base_1.0.safetensors [31e35c80fc]"

    reply = await txt2img(
        client, steps=1, override_settings={"sd_model_checkpoint": xl}
    )
    after = await txt2img(client, steps=1)

    info = json.loads(reply["info"])
    assert (info["sd_model_name"], info["sd_model_hash"]) == (
        "sd_xl_base_1.0",
        "31e35c80fc",
    )
    assert "Model: sd_xl_base_1.0," in info["infotexts"][0]
    assert json.loads(after["info"])["sd_model_name"] == "v1-5-pruned-emaonly"


async def test_an_unknown_override_model_is_dropped_quietly(client: Client) -> None:
    reply = await txt2img(
        client, steps=1, override_settings={"sd_model_checkpoint": "x"}
    )

    assert json.loads(reply["info"])["sd_model_name"] == "v1-5-pruned-emaonly"


async def test_an_unknown_override_setting_is_a_key_error(client: Client) -> None:
    response = await client.post(
        "/sdapi/v1/txt2img", json={"override_settings": {"no_such_option": 1}}
    )

    assert response.status == 500
    assert await response.json() == {
        "error": "KeyError",
        "detail": "",
        "body": "",
        "errors": "'no_such_option'",
    }


async def test_clip_skip_override_shows_in_the_infotext(client: Client) -> None:
    reply = await txt2img(
        client, steps=1, override_settings={"CLIP_stop_at_last_layers": 2}
    )

    info = json.loads(reply["info"])
    assert info["clip_skip"] == 2
    assert "Clip skip: 2" in info["infotexts"][0]


@pytest.mark.parametrize(
    ("kind", "script"),
    [
        ("txt2img", "X/Y/Z plot"),
        ("txt2img", "prompt matrix"),
        ("img2img", "sd upscale"),
        ("img2img", "Poor man's outpainting"),
        ("img2img", "LOOPBACK"),
    ],
)
async def test_script_names_match_case_insensitively(
    client: Client, kind: str, script: str
) -> None:
    body: dict[str, Any] = {"script_name": script, "script_args": [], "steps": 1}
    if kind == "img2img":
        body["init_images"] = [await _own_png_b64(client)]

    response = await client.post(f"/sdapi/v1/{kind}", json=body)

    assert response.status == 200


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"script_name": "sd upscale"}, "Script 'sd upscale' not found"),
        ({"script_name": "refiner"}, "Script 'refiner' not found"),
        ({"alwayson_scripts": {"nope": {}}}, "Script 'nope' not found"),
        (
            {"alwayson_scripts": {"x/y/z plot": {"args": []}}},
            "Cannot have a selectable script in the always on scripts params",
        ),
    ],
)
async def test_unknown_scripts_are_422_in_the_webui_shape(
    client: Client, body: dict[str, Any], detail: str
) -> None:
    response = await client.post("/sdapi/v1/txt2img", json=body)

    assert response.status == 422
    assert await response.json() == {
        "error": "HTTPException",
        "detail": detail,
        "body": "",
        "errors": "",
    }
    assert client.app[STANDIN].generations_started == 0


async def test_always_on_scripts_with_args_are_accepted(client: Client) -> None:
    body = {"alwayson_scripts": {"Refiner": {"args": [False, ""]}}, "steps": 1}

    assert (await client.post("/sdapi/v1/txt2img", json=body)).status == 200


async def test_infotext_fills_fields_the_request_left_out(client: Client) -> None:
    infotext = (
        "a cat\nNegative prompt: a dog\n"
        "Steps: 3, Sampler: Euler a, CFG scale: 5.5, Seed: 42, Size: 256x320"
    )

    reply = await txt2img(client, infotext=infotext, steps=2)

    parameters = reply["parameters"]
    assert parameters["prompt"] == "a cat" and parameters["negative_prompt"] == "a dog"
    assert parameters["steps"] == 2  # sent explicitly, so not taken from the infotext
    assert (parameters["seed"], parameters["cfg_scale"]) == (42, 5.5)
    assert (parameters["width"], parameters["height"]) == (256, 320)
    assert parameters["sampler_name"] == "Euler a"
    assert parameters["override_settings"] == {}
    assert png_size(decoded(reply)[0]) == (256, 320)


async def test_png_info_reads_back_a_generated_picture(client: Client) -> None:
    reply = await txt2img(
        client, prompt="cute squirrel", styles=["anime"], seed=9, steps=5
    )

    response = await client.post(
        "/sdapi/v1/png-info", json={"image": reply["images"][0]}
    )

    assert response.status == 200
    body = await response.json()
    assert body["info"] == json.loads(reply["info"])["infotexts"][0]
    assert body["items"] == {}
    parameters = body["parameters"]
    assert parameters["Prompt"] == "cute squirrel"  # the style is taken back out
    assert parameters["Styles array"] == ["anime"]
    assert (parameters["Steps"], parameters["Seed"]) == ("5", "9")
    assert (parameters["Size-1"], parameters["Size-2"]) == ("512", "512")
    assert parameters["Clip skip"] == "1"


async def test_non_latin1_prompts_use_an_itxt_chunk(client: Client) -> None:
    reply = await txt2img(client, prompt="猫, 桜", steps=1)

    image = decoded(reply)[0]
    assert [kind for kind, _ in png_chunks(image)][1] == b"iTXt"
    assert png_parameters(image).startswith("猫, 桜\n")
    info_text = (
        await (
            await client.post("/sdapi/v1/png-info", json={"image": reply["images"][0]})
        ).json()
    )["info"]
    assert info_text.startswith("猫, 桜")


async def test_png_info_requires_an_image(client: Client) -> None:
    response = await client.post("/sdapi/v1/png-info", json={})

    assert response.status == 422
    assert (await response.json())["detail"][0]["loc"] == ["body", "image"]


async def _own_png_b64(client: Client) -> str:
    reply = await txt2img(client, steps=1, width=64, height=64, seed=3)
    image: str = reply["images"][0]
    return image


async def img2img(client: Client, **body: Any) -> dict[str, Any]:
    response = await client.post("/sdapi/v1/img2img", json=body)
    assert response.status == 200, await response.text()
    reply: dict[str, Any] = await response.json()
    return reply


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"])
async def test_img2img_accepts_raw_base64_and_data_uris(
    client: Client, prefix: str
) -> None:
    source = await _own_png_b64(client)

    reply = await img2img(
        client, init_images=[prefix + source], steps=4, width=128, height=96
    )

    assert png_size(decoded(reply)[0]) == (128, 96)
    info = json.loads(reply["info"])
    assert info["denoising_strength"] == 0.75
    assert "Denoising strength: 0.75" in info["infotexts"][0]
    assert reply["parameters"]["init_images"] is None
    assert reply["parameters"]["mask"] is None


async def test_img2img_keeps_init_images_when_asked(client: Client) -> None:
    source = await _own_png_b64(client)

    reply = await img2img(
        client, init_images=[source], include_init_images=True, steps=1
    )

    assert reply["parameters"]["init_images"] == [source]


async def test_img2img_base64_is_decoded_leniently(client: Client) -> None:
    source = await _own_png_b64(client)
    noisy = "\n".join(source[i : i + 60] for i in range(0, len(source), 60)) + "*!"

    assert (
        await client.post("/sdapi/v1/img2img", json={"init_images": [noisy]})
    ).status == 200


async def test_img2img_without_init_images_is_404(client: Client) -> None:
    response = await client.post("/sdapi/v1/img2img", json={"prompt": "x"})

    assert response.status == 404
    assert await response.json() == {
        "error": "HTTPException",
        "detail": "Init image not found",
        "body": "",
        "errors": "",
    }


@pytest.mark.parametrize(
    "bad",
    [
        "",
        base64.b64encode(b"not an image at all").decode(),
        "iVBORw0KGgo",  # bad padding
        "data:image/png;base64,AAAA",
    ],
)
async def test_bad_init_images_are_invalid_encoded_image(
    client: Client, bad: str
) -> None:
    response = await client.post("/sdapi/v1/img2img", json={"init_images": [bad]})

    assert response.status == 500
    assert await response.json() == {
        "error": "HTTPException",
        "detail": "Invalid encoded image",
        "body": "",
        "errors": "",
    }


async def test_image_urls_are_refused_without_any_fetch(client: Client) -> None:
    body = {"init_images": ["http://127.0.0.1:9/picture.png"]}

    response = await client.post("/sdapi/v1/img2img", json=body)

    assert response.status == 500
    assert (await response.json())["detail"] == "Request to local resource not allowed"


async def test_too_many_init_images_for_the_batch_is_a_runtime_error(
    client: Client,
) -> None:
    source = await _own_png_b64(client)

    response = await client.post(
        "/sdapi/v1/img2img", json={"init_images": [source] * 2}
    )

    assert response.status == 500
    body = await response.json()
    assert body["error"] == "RuntimeError"
    assert body["errors"] == "bad number of images passed: 2; expecting 1 or less"


async def test_an_empty_mask_string_is_ignored(client: Client) -> None:
    source = await _own_png_b64(client)

    reply = await img2img(client, init_images=[source], mask="", steps=1)

    assert "Mask blur" not in json.loads(reply["info"])["extra_generation_params"]


async def test_a_mask_adds_inpainting_keys(client: Client) -> None:
    source = await _own_png_b64(client)

    reply = await img2img(client, init_images=[source], mask=source, steps=1)

    extra = json.loads(reply["info"])["extra_generation_params"]
    assert extra["Mask blur"] == 4 and extra["Inpaint area"] == "Only masked"


async def test_prompt_null_fails_the_webui_assertion(client: Client) -> None:
    response = await client.post("/sdapi/v1/txt2img", json={"prompt": None})

    assert response.status == 500
    assert await response.json() == {
        "error": "AssertionError",
        "detail": "",
        "body": "",
        "errors": "",
    }


async def test_steps_null_fails_during_generation(client: Client) -> None:
    response = await client.post("/sdapi/v1/txt2img", json={"steps": None})

    assert response.status == 500
    assert (await response.json())["error"] == "TypeError"
    assert client.app[STANDIN].generations_finished == 1


async def test_noise_images_are_incompressible(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(
        create_standin_app(StandinConfig(step_ms=0, noise_images=True))
    )

    reply = await txt2img(client, width=256, height=256, seed=1, steps=1)

    image = decoded(reply)[0]
    assert png_size(image) == (256, 256)
    assert len(image) > 256 * 256 * 3
    assert decoded(await txt2img(client, width=256, height=256, seed=1, steps=1)) == [
        image
    ]


async def test_requests_are_recorded_with_their_bodies(client: Client) -> None:
    await txt2img(client, prompt="x", steps=1, force_task_id="task-1")

    assert client.app[STANDIN].requests == [
        ("/sdapi/v1/txt2img", {"prompt": "x", "steps": 1, "force_task_id": "task-1"})
    ]


async def test_extras_single_image_upscales(client: Client) -> None:
    source = await _own_png_b64(client)
    body = {"image": source, "upscaler_1": "R-ESRGAN 4x+", "upscaling_resize": 2}

    response = await client.post("/sdapi/v1/extra-single-image", json=body)

    assert response.status == 200
    reply = await response.json()
    assert png_size(base64.b64decode(reply["image"])) == (128, 128)
    assert "R-ESRGAN 4x+" in reply["html_info"]


async def test_extras_check_their_ranges(client: Client) -> None:
    body = {"image": "", "gfpgan_visibility": 2}

    response = await client.post("/sdapi/v1/extra-single-image", json=body)

    assert response.status == 422
    assert (await response.json())["detail"][0]["type"] == "value_error.number.not_le"


async def test_interrogate_gives_a_caption(client: Client) -> None:
    source = await _own_png_b64(client)

    response = await client.post("/sdapi/v1/interrogate", json={"image": source})
    unknown = await client.post(
        "/sdapi/v1/interrogate", json={"image": source, "model": "blip9"}
    )

    assert response.status == 200 and isinstance(
        (await response.json())["caption"], str
    )
    assert unknown.status == 404
    assert (await unknown.json())["detail"] == "Model not found"


@pytest.mark.parametrize("images", [[], [b"aGk="], [b"aGk=", b"iVBORw0KGgo="]])
def test_the_joined_reply_equals_a_serialised_one(images: list[bytes]) -> None:
    parameters = {"prompt": 'ünïcode "quoted"', "seed": -1, "cfg_scale": 7.0}
    info = json.dumps({"prompt": "ünïcode", "infotexts": ["a\nb"]})

    joined = encode_reply(images, parameters, info)

    as_text = [image.decode() for image in images]
    assert joined == encode_json(
        {"images": as_text, "parameters": parameters, "info": info}
    )
