"""Storage failures: no acknowledgement without a durable record, reads go on."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpClient

from inuqueue import journal as journal_module
from inuqueue.app import create_app
from inuqueue.config import Config
from inuqueue.lock import DataDirBusy
from tests.conftest import API, Daemon, DaemonProcess, StandinHandle


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [(errno.EIO, 503, "storage_failed"), (errno.ENOSPC, 507, "storage_full")],
)
async def test_a_failed_fsync_stops_acknowledgements_until_the_disk_works(
    aiohttp_client: AiohttpClient,
    daemon_config: Config,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    status: int,
    error: str,
) -> None:
    daemon = Daemon(aiohttp_client, daemon_config)
    await daemon.start(storage_retry_s=0.01)
    kept = await daemon.enqueue({"prompt": "before"})
    await daemon.wait_status(kept, "done")
    real_sync = journal_module._datasync
    broken = True

    def flaky_sync(fd: int) -> None:
        if broken:
            raise OSError(code, os.strerror(code))
        real_sync(fd)

    monkeypatch.setattr(journal_module, "_datasync", flaky_sync)
    refused = await daemon.client.post(f"{API}/queue/txt2img", json={"prompt": "lost"})
    body = await refused.json()
    assert (refused.status, body["error"]) == (status, error)
    assert "reads still work" in body["message"]
    assert (await daemon.client.get(f"{API}/task/{kept}")).status == 200
    health = await (await daemon.client.get(f"{API}/health")).json()
    assert health["status"] == "degraded" and health["journal"]["error"]

    broken = False
    await daemon.runtime.queue.journal.healthy.wait()
    later = await daemon.enqueue({"prompt": "after"})
    await daemon.wait_status(later, "done")

    prompts = {t.request["prompt"] for t in daemon.runtime.queue.state.tasks.values()}
    assert prompts == {"before", "after"}
    await daemon.restart()
    prompts = {t.request["prompt"] for t in daemon.runtime.queue.state.tasks.values()}
    assert prompts == {"before", "after"}
    await daemon.stop()


async def test_a_second_daemon_on_the_same_data_refuses_to_start(
    daemon: Daemon,
) -> None:
    second = TestServer(create_app(daemon.config))

    with pytest.raises(DataDirBusy, match=f"pid {os.getpid()}"):
        await second.start_server()
    await second.close()

    assert (await daemon.client.get(f"{API}/health")).status == 200


async def test_a_second_daemon_process_ends_with_one_line(
    standin: StandinHandle, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = DaemonProcess(["--upstream", standin.url, "--data", str(data)])
    await first.start()
    second = DaemonProcess(["--upstream", standin.url, "--data", str(data)])
    try:
        with pytest.raises(AssertionError):
            await second.start()
        assert second.proc is not None
        assert await second.proc.wait() == 69
        assert any("is using the data directory" in str(e) for e in second.log)
    finally:
        await first.stop()
        await second.stop()
