"""Access: a token on every route, Basic auth towards the webui, loud open binds."""

from __future__ import annotations

from pathlib import Path

import structlog
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from inuqueue.access import is_loopback
from inuqueue.config import Config
from inuqueue.standin import STANDIN, StandinConfig, create_standin_app
from tests.conftest import API, Daemon

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def test_every_route_asks_for_the_token(
    aiohttp_client: AiohttpClient, daemon_config: Config
) -> None:
    daemon = Daemon(aiohttp_client, daemon_config)
    client = await daemon.start(token=TOKEN)

    for method, path in [
        ("GET", f"{API}/queue"),
        ("POST", f"{API}/queue/txt2img"),
        ("GET", "/sdapi/v1/sd-models"),
        ("POST", "/sdapi/v1/txt2img"),
        ("GET", f"{API}/events"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = await client.request(method, path, headers=headers, json={})
            assert response.status == 401, (method, path, headers)
            assert (await response.json())["error"] == "unauthorized"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")

    assert (await client.get(f"{API}/queue", headers=BEARER)).status == 200
    assert (await client.get("/sdapi/v1/sd-models", headers=BEARER)).status == 418
    events = await client.get(f"{API}/events?access_token={TOKEN}")
    assert events.status == 200
    events.close()
    await daemon.stop()


async def test_the_client_token_is_never_passed_to_the_webui(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    seen: list[str | None] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({})

    upstream = web.Application()
    upstream.router.add_get("/echo", echo)
    server = await aiohttp_server(upstream)
    config = Config(upstream=str(server.make_url("")), data_dir=tmp_path / "d")
    daemon = Daemon(aiohttp_client, config)
    client = await daemon.start(token=TOKEN)

    assert (await client.get("/echo", headers=BEARER)).status == 418
    await daemon.stop()
    client = await daemon.start(token=None)
    assert (await client.get("/echo", headers={"Authorization": "Basic eDp5"})).status
    await daemon.stop()

    assert seen == [None, "Basic eDp5"]


async def test_upstream_auth_reaches_a_webui_started_with_api_auth(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    app = create_standin_app(StandinConfig(step_ms=0, api_auth="alice:pw"))
    server = await aiohttp_server(app)
    config = Config(
        upstream=str(server.make_url("")).rstrip("/"),
        data_dir=tmp_path / "d",
        upstream_auth="alice:pw",
    )
    daemon = Daemon(aiohttp_client, config)
    await daemon.start()

    task = await daemon.wait_status(await daemon.enqueue(), "done")
    proxied = await daemon.client.get("/sdapi/v1/sd-models")

    assert task["images"]
    assert proxied.status == 418
    assert app[STANDIN].generations_started == 1
    await daemon.stop()


async def test_without_upstream_auth_tasks_wait_and_health_names_the_flag(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    app = create_standin_app(StandinConfig(step_ms=0, api_auth="alice:pw"))
    server = await aiohttp_server(app)
    daemon = Daemon(
        aiohttp_client, Config(upstream=str(server.make_url("")), data_dir=tmp_path)
    )
    await daemon.start()

    task_id = await daemon.enqueue()
    queue = daemon.runtime.queue
    await queue.wait_until(lambda: daemon.runtime.upstream.reachable is False)
    health = await (await daemon.client.get(f"{API}/health")).json()

    assert queue.state.tasks[task_id].status == "pending"
    assert queue.state.tasks[task_id].attempts == 0
    assert health["status"] == "degraded"
    assert "--upstream-auth" in health["upstream"]["error"]
    await daemon.stop()


async def test_the_bearer_scheme_is_case_insensitive(
    aiohttp_client: AiohttpClient, daemon_config: Config
) -> None:
    daemon = Daemon(aiohttp_client, daemon_config)
    client = await daemon.start(token=TOKEN)

    response = await client.get(
        f"{API}/queue", headers={"Authorization": f"bearer {TOKEN}"}
    )

    assert response.status == 200
    await daemon.stop()


async def test_an_open_bind_without_a_token_is_warned_about(
    aiohttp_client: AiohttpClient, daemon_config: Config
) -> None:
    daemon = Daemon(aiohttp_client, daemon_config)
    with structlog.testing.capture_logs() as logs:
        await daemon.start(host="0.0.0.0")
        await daemon.stop()
        await daemon.start(host="0.0.0.0", token=TOKEN)
        await daemon.stop()

    warnings = [e for e in logs if e["event"] == "daemon.open_to_the_network"]
    assert len(warnings) == 1
    assert "--token" in warnings[0]["advice"]


def test_loopback_addresses_are_recognised() -> None:
    assert all(is_loopback(h) for h in ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
    assert not any(is_loopback(h) for h in ["0.0.0.0", "192.0.2.1", "::", "example"])
