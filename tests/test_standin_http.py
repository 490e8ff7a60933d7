"""What the stand-in's HTTP shell shows a client: errors, auth, GZip, options, lists."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from inuqueue.errors import ConfigError
from inuqueue.standin import STANDIN, StandinConfig, create_standin_app

Client = TestClient[web.Request, web.Application]
NO_GZIP = {"Accept-Encoding": "identity"}


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_standin_app(StandinConfig(step_ms=0)))


@pytest.fixture
async def guarded(aiohttp_client: AiohttpClient) -> Client:
    config = StandinConfig(step_ms=0, api_auth="alice:s3cret,bob:hunter2")
    return await aiohttp_client(create_standin_app(config))


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_unknown_paths_are_json_404(client: Client) -> None:
    response = await client.get("/sdapi/v1/nothing-here")

    assert response.status == 404
    assert await response.text() == '{"detail":"Not Found"}'
    assert response.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/sdapi/v1/txt2img", "POST"),
        ("DELETE", "/sdapi/v1/progress", "GET, HEAD"),
        ("PUT", "/sdapi/v1/options", "GET, HEAD"),
    ],
)
async def test_wrong_methods_are_json_405_with_allow(
    client: Client, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)

    assert response.status == 405
    assert await response.json() == {"detail": "Method Not Allowed"}
    assert response.headers["Allow"] == allow


async def test_a_trailing_slash_redirects_like_starlette(client: Client) -> None:
    response = await client.get("/sdapi/v1/samplers/?x=1", allow_redirects=False)

    assert response.status == 307
    assert response.headers["Location"].endswith("/sdapi/v1/samplers?x=1")


async def test_every_response_has_x_process_time(client: Client) -> None:
    responses = [
        await client.get("/sdapi/v1/progress"),
        await client.get("/missing"),
        await client.post("/sdapi/v1/txt2img", json={"steps": "x"}),
        await client.post("/sdapi/v1/txt2img", json={"prompt": None}),
    ]

    for response in responses:
        assert float(response.headers["X-Process-Time"]) >= 0
        assert response.headers["Server"] == "uvicorn"


async def test_bad_json_is_a_jsondecode_422(client: Client) -> None:
    response = await client.post(
        "/sdapi/v1/txt2img",
        data=b'{"steps": }',
        headers={"Content-Type": "application/json"},
    )

    assert response.status == 422
    (error,) = (await response.json())["detail"]
    assert error["loc"] == ["body", 10]
    assert error["type"] == "value_error.jsondecode"
    assert error["msg"] == "Expecting value: line 1 column 11 (char 10)"
    assert error["ctx"]["pos"] == 10


async def test_a_missing_body_is_field_required(client: Client) -> None:
    response = await client.post("/sdapi/v1/txt2img")

    assert response.status == 422
    assert await response.json() == {
        "detail": [
            {"loc": ["body"], "msg": "field required", "type": "value_error.missing"}
        ]
    }


async def test_a_non_json_content_type_is_not_a_valid_dict(client: Client) -> None:
    response = await client.post(
        "/sdapi/v1/txt2img",
        data=b'{"prompt": "x"}',
        headers={"Content-Type": "text/plain"},
    )

    assert response.status == 422
    assert (await response.json())["detail"][0]["msg"] == "value is not a valid dict"


async def test_a_json_body_without_content_type_is_parsed(client: Client) -> None:
    response = await client.post(
        "/sdapi/v1/txt2img", data=b'{"steps": 1}', skip_auto_headers=["Content-Type"]
    )

    assert response.status == 200


async def test_undecodable_bytes_are_a_400(client: Client) -> None:
    response = await client.post(
        "/sdapi/v1/txt2img",
        data=b"\xff\xfe\xfa",
        headers={"Content-Type": "application/json"},
    )

    assert response.status == 400
    assert (await response.json())["detail"] == "There was an error parsing the body"


async def test_large_json_replies_are_gzipped_when_accepted(client: Client) -> None:
    zipped = await client.get("/sdapi/v1/options", headers={"Accept-Encoding": "gzip"})
    plain = await client.get("/sdapi/v1/options", headers=NO_GZIP)
    small = await client.get("/sdapi/v1/progress", headers={"Accept-Encoding": "gzip"})

    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain.headers
    assert "Content-Encoding" not in small.headers
    assert await zipped.json() == await plain.json()


async def test_auth_guards_sdapi_without_www_authenticate(guarded: Client) -> None:
    cases = [
        ({}, "Not authenticated"),
        ({"Authorization": "Bearer abc"}, "Not authenticated"),
        (basic("alice", "wrong"), "Incorrect username or password"),
        (basic("mallory", "s3cret"), "Incorrect username or password"),
        (
            {"Authorization": "Basic !!!not-base64"},
            "Invalid authentication credentials",
        ),
        (
            {"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
            "Invalid authentication credentials",
        ),
    ]
    for headers, detail in cases:
        response = await guarded.get("/sdapi/v1/samplers", headers=headers)
        assert response.status == 401, headers
        assert await response.json() == {
            "error": "HTTPException",
            "detail": detail,
            "body": "",
            "errors": "",
        }
        assert "WWW-Authenticate" not in response.headers

    assert (
        await guarded.get("/sdapi/v1/samplers", headers=basic("bob", "hunter2"))
    ).status == 200


async def test_auth_leaves_the_unprotected_routes_open(guarded: Client) -> None:
    for path in ("/sdapi/v1/loras", "/internal/ping", "/internal/pending-tasks", "/"):
        assert (await guarded.get(path)).status == 200, path


async def test_bad_json_is_reported_before_auth(guarded: Client) -> None:
    bad = await guarded.post(
        "/sdapi/v1/txt2img", data=b"{", headers={"Content-Type": "application/json"}
    )
    good = await guarded.post("/sdapi/v1/txt2img", json={"steps": "not a number"})

    assert bad.status == 422
    assert good.status == 401


async def test_auth_accepts_valid_credentials_for_generation(guarded: Client) -> None:
    response = await guarded.post(
        "/sdapi/v1/txt2img", json={"steps": 1}, headers=basic("alice", "s3cret")
    )

    assert response.status == 200


def test_a_colon_in_an_api_auth_password_is_refused() -> None:
    with pytest.raises(ConfigError):
        create_standin_app(StandinConfig(api_auth="user:pa:ss"))


async def test_cors_preflights_are_refused(client: Client) -> None:
    response = await client.options(
        "/sdapi/v1/txt2img",
        headers={
            "Origin": "http://example.test",
            "Access-Control-Request-Method": "POST",
        },
    )

    assert response.status == 400
    assert await response.text() == "Disallowed CORS origin"


async def test_root_is_a_page(client: Client) -> None:
    response = await client.get("/")

    assert response.status == 200
    assert response.content_type == "text/html"
    assert "<html" in await response.text()


async def test_options_type_ints_as_floats_and_round_trip(client: Client) -> None:
    before = await (await client.get("/sdapi/v1/options")).json()

    answer = await client.post(
        "/sdapi/v1/options", json={"send_seed": False, "jpeg_quality": 90}
    )
    after = await (await client.get("/sdapi/v1/options")).json()

    assert before["jpeg_quality"] == 80.0 and isinstance(before["jpeg_quality"], float)
    assert before["send_seed"] is True
    assert (
        before["sd_model_checkpoint"] == "v1-5-pruned-emaonly.safetensors [6ce0161689]"
    )
    assert answer.status == 200 and await answer.text() == "null"
    assert after["send_seed"] is False and after["jpeg_quality"] == 90.0


async def test_options_reject_an_unknown_model(client: Client) -> None:
    response = await client.post(
        "/sdapi/v1/options", json={"sd_model_checkpoint": "x.ckpt"}
    )

    assert response.status == 500
    assert await response.json() == {
        "error": "RuntimeError",
        "detail": "",
        "body": "",
        "errors": "model 'x.ckpt' not found",
    }


async def test_an_unknown_option_is_a_key_error_after_earlier_keys(
    client: Client,
) -> None:
    response = await client.post(
        "/sdapi/v1/options", json={"send_size": False, "no_such": 1, "send_seed": False}
    )
    options = await (await client.get("/sdapi/v1/options")).json()

    assert response.status == 500
    assert (await response.json())["errors"] == "'no_such'"
    assert options["send_size"] is False and options["send_seed"] is True


async def test_options_skip_restricted_and_unchanged_values(client: Client) -> None:
    response = await client.post(
        "/sdapi/v1/options",
        json={
            "api_enable_requests": False,
            "unknown_but_null": None,
            "send_seed": True,
        },
    )
    options = await (await client.get("/sdapi/v1/options")).json()

    assert response.status == 200
    assert options["api_enable_requests"] is True


async def test_a_stored_value_the_model_cannot_type_fails_get(client: Client) -> None:
    await client.post("/sdapi/v1/options", json={"jpeg_quality": "best"})

    response = await client.get("/sdapi/v1/options")

    assert response.status == 500
    assert (await response.json())["error"] == "ValidationError"


async def test_a_checkpoint_change_waits_for_the_running_job(client: Client) -> None:
    standin = client.app[STANDIN]
    standin.hold()
    job = asyncio.create_task(client.post("/sdapi/v1/txt2img", json={"steps": 1}))
    await standin.wait_held()
    change = asyncio.create_task(
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "sd_xl_base_1.0"})
    )

    done, _ = await asyncio.wait({change}, timeout=0.05)
    standin.release()
    await job
    await change
    options = await (await client.get("/sdapi/v1/options")).json()

    assert not done
    assert options["sd_model_checkpoint"] == "sd_xl_base_1.0.safetensors [31e35c80fc]"
    generated = await (await client.post("/sdapi/v1/txt2img", json={"steps": 1})).json()
    assert json.loads(generated["info"])["sd_model_hash"] == "31e35c80fc"


async def test_samplers_are_the_v1_10_catalogue_in_order(client: Client) -> None:
    samplers = await (await client.get("/sdapi/v1/samplers")).json()

    names = [sampler["name"] for sampler in samplers]
    assert names[:3] == ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE"]
    assert names[-5:] == ["DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
    assert len(names) == 20
    euler_a = samplers[names.index("Euler a")]
    assert euler_a == {
        "name": "Euler a",
        "aliases": ["k_euler_a", "k_euler_ancestral"],
        "options": {"uses_ensd": "True"},
    }


async def test_schedulers_list_labels_and_rho(client: Client) -> None:
    schedulers = await (await client.get("/sdapi/v1/schedulers")).json()

    assert schedulers[0] == {
        "name": "automatic",
        "label": "Automatic",
        "aliases": None,
        "default_rho": -1.0,
        "need_inner_model": False,
    }
    by_name = {item["name"]: item for item in schedulers}
    assert by_name["karras"]["default_rho"] == 7.0
    assert by_name["sgm_uniform"]["aliases"] == ["SGMUniform"]
    assert len(schedulers) == 12


async def test_sd_models_have_titles_with_short_hashes(client: Client) -> None:
    models = await (await client.get("/sdapi/v1/sd-models")).json()

    titles = [model["title"] for model in models]
    assert "sd_xl_base_1.0.safetensors [31e35c80fc]" in titles
    for model in models:
        assert set(model) == {
            "title",
            "model_name",
            "hash",
            "sha256",
            "filename",
            "config",
        }
        assert model["sha256"].startswith(model["hash"]) and len(model["hash"]) == 10


@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("upscalers", lambda body: body[0]["name"] == "None" and "scale" in body[0]),
        ("latent-upscale-modes", lambda body: body[0] == {"name": "Latent"}),
        ("sd-vae", lambda body: body[0]["model_name"] == "sdxl_vae.safetensors"),
        ("hypernetworks", lambda body: body == []),
        ("face-restorers", lambda body: {"name", "cmd_dir"} == set(body[0])),
        ("realesrgan-models", lambda body: {"name", "path", "scale"} == set(body[0])),
        ("prompt-styles", lambda body: "anime" in [style["name"] for style in body]),
        ("embeddings", lambda body: set(body) == {"loaded", "skipped"}),
        ("cmd-flags", lambda body: body["api"] is True and body["nowebui"] is False),
        ("memory", lambda body: body["cuda"] == {"error": "unavailable"}),
        ("scripts", lambda body: "sd upscale" in body["img2img"]),
        (
            "script-info",
            lambda body: {"name", "is_alwayson", "is_img2img", "args"} == set(body[0]),
        ),
        ("extensions", lambda body: body == []),
        ("loras", lambda body: body[0]["name"] == "add_detail"),
    ],
)
async def test_list_routes_answer_their_shapes(
    client: Client, path: str, check: Any
) -> None:
    response = await client.get(f"/sdapi/v1/{path}")

    assert response.status == 200
    assert check(await response.json())


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("refresh-checkpoints", "null"),
        ("refresh-embeddings", "null"),
        ("refresh-vae", "null"),
        ("refresh-loras", "null"),
        ("unload-checkpoint", "{}"),
        ("reload-checkpoint", "{}"),
    ],
)
async def test_maintenance_posts_answer_like_the_webui(
    client: Client, path: str, answer: str
) -> None:
    response = await client.post(f"/sdapi/v1/{path}")

    assert response.status == 200
    assert await response.text() == answer


async def test_internal_ping_is_empty_json(client: Client) -> None:
    response = await client.get("/internal/ping")

    assert await response.text() == "{}"
