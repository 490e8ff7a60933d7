"""The teapot fallthrough: everything that is not inuqueue's goes to the webui."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from inuqueue.app import create_app
from inuqueue.config import Config
from tests.conftest import Daemon, StandinHandle, free_port, tiny_png


async def test_a_fulfilled_request_answers_418_with_the_webui_body(
    daemon: Daemon, standin: StandinHandle
) -> None:
    async with aiohttp.ClientSession() as direct_session:
        direct = await direct_session.get(standin.url + "/sdapi/v1/sd-models")
        direct_body = await direct.read()

    proxied = await daemon.client.get("/sdapi/v1/sd-models")

    assert proxied.status == 418
    assert proxied.headers["X-Upstream-Status"] == "200"
    assert proxied.content_type == "application/json"
    assert await proxied.read() == direct_body


async def test_without_the_teapot_a_2xx_passes_through(
    aiohttp_client: AiohttpClient, daemon_config: Config
) -> None:
    daemon = Daemon(aiohttp_client, daemon_config)
    await daemon.start(teapot=False)

    response = await daemon.client.get("/sdapi/v1/samplers")

    assert response.status == 200
    assert (await response.json())[0]["name"]
    await daemon.stop()


async def test_webui_errors_come_back_unchanged(daemon: Daemon) -> None:
    missing = await daemon.client.get("/sdapi/v1/no-such-route")
    assert missing.status == 404
    assert await missing.json() == {"detail": "Not Found"}

    bad_option = await daemon.client.post(
        "/sdapi/v1/options", json={"no_such_option_anywhere": 1}
    )
    assert bad_option.status == 500
    body = await bad_option.json()
    assert body["error"] == "KeyError"
    assert "X-Upstream-Status" in bad_option.headers


async def test_bodies_queries_and_methods_are_forwarded(daemon: Daemon) -> None:
    set_option = await daemon.client.post(
        "/sdapi/v1/options", json={"send_seed": False}
    )
    assert set_option.status == 418
    assert await set_option.json() == None  # noqa: E711 - the webui answers null

    options = await (await daemon.client.get("/sdapi/v1/options")).json()
    assert options["send_seed"] is False

    progress = await daemon.client.get("/sdapi/v1/progress?skip_current_image=true")
    assert (await progress.json())["progress"] == 0.0


async def test_a_large_body_streams_through(daemon: Daemon) -> None:
    import base64

    png = tiny_png(1024, 1024)
    response = await daemon.client.post(
        "/sdapi/v1/png-info", json={"image": base64.b64encode(png).decode()}
    )

    assert response.status == 418
    assert "info" in await response.json()


async def test_a_gzipped_answer_is_passed_on_as_it_came(daemon: Daemon) -> None:
    response = await daemon.client.get(
        "/sdapi/v1/samplers", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    raw = await response.read()

    assert response.headers["Content-Encoding"] == "gzip"
    assert orjson.loads(gzip.decompress(raw))[0]["name"]


async def test_hop_by_hop_headers_and_host_are_not_forwarded(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    seen: dict[str, str] = {}

    async def echo(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return web.json_response({}, headers={"Keep-Alive": "timeout=5", "X-Web": "1"})

    upstream = web.Application()
    upstream.router.add_get("/echo", echo)
    server = await aiohttp_server(upstream)
    config = Config(upstream=str(server.make_url("")), data_dir=tmp_path / "d")
    daemon = Daemon(aiohttp_client, config)
    await daemon.start()

    response = await daemon.client.get(
        "/echo",
        headers={"X-Client": "yes", "Proxy-Authorization": "Basic x", "TE": "trailers"},
    )

    assert seen["X-Client"] == "yes"
    assert "Proxy-Authorization" not in seen and "TE" not in seen
    assert seen["Host"] == f"127.0.0.1:{server.port}"
    assert response.headers["X-Web"] == "1"
    assert "Keep-Alive" not in response.headers
    await daemon.stop()


async def _raw_request(daemon: Daemon, request: bytes) -> bytes:
    """Send bytes as they are (no client normalises them) and read the answer."""
    server = daemon.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def test_an_absolute_url_cannot_steer_the_proxy_elsewhere(
    daemon: Daemon, standin: StandinHandle
) -> None:
    answer = await _raw_request(
        daemon,
        b"GET http://203.0.113.9:7860/sdapi/v1/samplers HTTP/1.1\r\n"
        b"Host: 203.0.113.9:7860\r\nConnection: close\r\n\r\n",
    )

    assert answer.startswith(b"HTTP/1.1 418")
    assert b'"DPM++ 2M"' in answer


async def test_an_unreachable_webui_is_a_502_naming_it(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    daemon = Daemon(aiohttp_client, Config(upstream=url, data_dir=tmp_path / "d"))
    await daemon.start()

    response = await daemon.client.get("/sdapi/v1/sd-models")

    body = await response.json()
    assert response.status == 502
    assert body["error"] == "upstream_unreachable"
    assert url in body["message"]
    await daemon.stop()


async def test_a_webui_that_does_not_answer_in_time_is_a_504(
    aiohttp_client: AiohttpClient, daemon_config: Config, standin: StandinHandle
) -> None:
    standin.state.delay_ms = 2000
    daemon = Daemon(aiohttp_client, daemon_config)
    await daemon.start(proxy_timeout_s=0.05)

    response = await daemon.client.get("/sdapi/v1/sd-models")

    assert response.status == 504
    assert (await response.json())["error"] == "upstream_timeout"
    standin.state.delay_ms = 0
    await daemon.stop()


async def test_a_redirect_to_the_webui_stays_with_inuqueue(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    async def moved(request: web.Request) -> web.Response:
        own = str(request.url.origin())
        return web.Response(status=307, headers={"Location": own + "/elsewhere?x=1"})

    upstream = web.Application()
    upstream.router.add_get("/old", moved)
    server = await aiohttp_server(upstream)
    config = Config(upstream=str(server.make_url("")).rstrip("/"), data_dir=tmp_path)
    daemon = Daemon(aiohttp_client, config)
    await daemon.start()

    response = await daemon.client.get("/old", allow_redirects=False)

    assert response.status == 307
    assert response.headers["Location"] == "/elsewhere?x=1"
    await daemon.stop()


async def test_dot_segments_cannot_reach_around_the_queue(
    daemon: Daemon, standin: StandinHandle
) -> None:
    answer = await _raw_request(
        daemon,
        b"POST /sdapi/v1/./txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}",
    )

    assert answer.startswith(b"HTTP/1.1 400")
    assert b"invalid_path" in answer
    assert standin.state.requests == []


async def test_an_upstream_pointing_back_at_inuqueue_is_a_loop_error(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    port = free_port()
    config = Config(upstream=f"http://127.0.0.1:{port}", data_dir=tmp_path / "d")
    await aiohttp_server(create_app(config), port=port)

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/sdapi/v1/sd-models") as response,
    ):
        body = await response.json()

    assert response.status == 508
    assert body["error"] == "proxy_loop"
