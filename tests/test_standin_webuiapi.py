"""A real webui client (the webuiapi library) against the stand-in, over real HTTP."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from inuqueue.standin import STANDIN, StandinConfig, create_standin_app

# A test dependency (setup.cfg): a missing one must fail the run, not skip it.
webuiapi: Any = importlib.import_module("webuiapi")
Image: Any = importlib.import_module("PIL.Image")


@pytest.fixture
async def api(aiohttp_server: AiohttpServer) -> Any:
    server = await aiohttp_server(create_standin_app(StandinConfig(step_ms=0)))
    # The client is synchronous (requests), so it runs beside the loop, not on it.
    return await asyncio.to_thread(
        webuiapi.WebUIApi, host="127.0.0.1", port=server.port
    )


async def test_webuiapi_txt2img_decodes_pictures_and_info(api: Any) -> None:
    result = await asyncio.to_thread(
        api.txt2img,
        prompt="cute squirrel",
        negative_prompt="ugly, out of frame",
        seed=1003,
        styles=["anime"],
        cfg_scale=7,
        steps=3,
        batch_size=2,
    )

    assert [image.size for image in result.images] == [(512, 512), (512, 512)]
    assert result.info["all_seeds"] == [1003, 1004]
    assert result.parameters["styles"] == ["anime"]
    assert result.images[0].info["parameters"] == result.info["infotexts"][0]


async def test_webuiapi_img2img_sends_data_uris(api: Any) -> None:
    source = Image.new("RGB", (96, 64), (200, 30, 30))

    result = await asyncio.to_thread(
        api.img2img, images=[source], prompt="red", steps=4, width=96, height=64, seed=2
    )

    assert result.images[0].size == (96, 64)
    assert result.info["denoising_strength"] == 0.75


async def test_webuiapi_png_info_options_and_progress(api: Any) -> None:
    generated = await asyncio.to_thread(api.txt2img, prompt="a fox", seed=5, steps=2)

    info = await asyncio.to_thread(api.png_info, generated.images[0])
    await asyncio.to_thread(api.set_options, {"send_seed": False})
    options = await asyncio.to_thread(api.get_options)
    progress = await asyncio.to_thread(api.get_progress)
    interrupted = await asyncio.to_thread(api.interrupt)

    assert info.info.startswith("a fox\nSteps: 2,")
    assert options["send_seed"] is False
    assert progress["progress"] == 0.0 and progress["state"]["job_count"] == 0
    assert interrupted == {}


async def test_webuiapi_lists_work(api: Any) -> None:
    samplers = await asyncio.to_thread(api.get_samplers)
    models = await asyncio.to_thread(api.get_sd_models)
    styles = await asyncio.to_thread(api.get_prompt_styles)
    scripts = await asyncio.to_thread(api.get_scripts)

    assert samplers[0]["name"] == "DPM++ 2M"
    assert any(model["hash"] == "31e35c80fc" for model in models)
    assert "anime" in [style["name"] for style in styles]
    assert "x/y/z plot" in scripts["txt2img"]


async def test_webuiapi_with_basic_auth(aiohttp_server: AiohttpServer) -> None:
    app = create_standin_app(StandinConfig(step_ms=0, api_auth="user:pw"))
    server = await aiohttp_server(app)

    def generate() -> Any:
        client = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
        client.set_auth("user", "pw")
        return client.txt2img(prompt="x", steps=1)

    result = await asyncio.to_thread(generate)

    assert len(result.images) == 1
    assert app[STANDIN].generations_finished == 1
