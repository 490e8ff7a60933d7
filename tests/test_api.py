"""inuqueue's own routes, driven over HTTP against the stand-in webui."""

from __future__ import annotations

import base64
import hashlib
import json

import orjson
from pytest_aiohttp import AiohttpClient

from inuqueue.config import Config
from inuqueue.http import json_response
from tests.conftest import API, Daemon, StandinHandle, hold_a_running_task, tiny_png


async def test_a_queued_txt2img_runs_and_its_images_are_served(
    daemon: Daemon, standin: StandinHandle
) -> None:
    response = await daemon.client.post(
        f"{API}/queue/txt2img",
        json={"prompt": "a red fox", "steps": 3, "batch_size": 2, "seed": 1234},
    )
    assert response.status == 202
    answer = await response.json()
    assert answer["status"] == "pending"
    assert answer["position"] in (0, None)
    task_id = answer["task_id"]
    assert response.headers["Location"] == f"{API}/task/{task_id}"

    task = await daemon.wait_status(task_id, "done")

    assert task["type"] == "txt2img"
    assert task["attempts"] == 1
    assert task["created_at"].endswith("Z") and task["finished_at"].endswith("Z")
    assert task["info"]["all_seeds"] == [1234, 1235]
    assert len(task["images"]) == 2
    assert standin.state.requests[-1][1]["force_task_id"] == task_id
    image = task["images"][0]
    served = await daemon.client.get(image["url"])
    body = await served.read()
    assert served.status == 200
    assert served.content_type == "image/png"
    assert hashlib.sha256(body).hexdigest() == image["digest"]
    assert len(body) == image["bytes"]
    assert served.headers["ETag"] == f'"{image["digest"]}"'
    assert "immutable" in served.headers["Cache-Control"]


async def test_an_image_is_not_sent_again_to_a_client_that_has_it(
    daemon: Daemon,
) -> None:
    task = await daemon.wait_status(await daemon.enqueue(), "done")
    url = task["images"][0]["url"]

    again = await daemon.client.get(
        url, headers={"If-None-Match": f'"{task["images"][0]["digest"]}"'}
    )

    assert again.status == 304
    assert await again.read() == b""


async def test_results_carry_infotexts_seeds_and_optional_base64(
    daemon: Daemon,
) -> None:
    task_id = await daemon.enqueue({"prompt": "a boat", "seed": 77, "n_iter": 2})
    await daemon.wait_status(task_id, "done")

    plain = await (await daemon.client.get(f"{API}/task/{task_id}/results")).json()
    inline = await daemon.client.get(f"{API}/task/{task_id}/results?inline=base64")
    inlined = await inline.json()

    assert [image["seed"] for image in plain["images"]] == [77, 78]
    assert plain["images"][0]["infotext"].startswith("a boat\n")
    assert "base64" not in plain["images"][0]
    data = base64.b64decode(inlined["images"][1]["base64"])
    assert hashlib.sha256(data).hexdigest() == inlined["images"][1]["digest"]


async def test_bad_json_and_non_objects_get_400_and_nothing_is_journaled(
    daemon: Daemon,
) -> None:
    before = daemon.runtime.queue.journal.last_seq
    for raw in [b"{not json", b"[1, 2]", b""]:
        response = await daemon.client.post(f"{API}/queue/txt2img", data=raw)
        body = await response.json()
        assert response.status == 400, raw
        assert body["error"] == "invalid_json"
        assert "JSON object" in body["message"]
    assert daemon.runtime.queue.journal.last_seq == before


async def test_a_field_of_the_wrong_type_gets_422_naming_it(daemon: Daemon) -> None:
    before = daemon.runtime.queue.journal.last_seq
    cases = [
        ({"steps": "many"}, "steps"),
        ({"priority": "high"}, "priority"),
        ({"name": 5}, "name"),
        ({"override_settings": [1]}, "override_settings"),
    ]
    for body, field in cases:
        response = await daemon.client.post(f"{API}/queue/txt2img", json=body)
        answer = await response.json()
        assert response.status == 422, body
        assert answer["field"] == field
        assert field in answer["message"]
    assert daemon.runtime.queue.journal.last_seq == before


async def test_unknown_fields_pass_through_to_the_webui(
    daemon: Daemon, standin: StandinHandle
) -> None:
    task_id = await daemon.enqueue({"distilled_cfg_scale": 3.5, "steps": 1})
    await daemon.wait_status(task_id, "done")

    assert standin.state.requests[-1][1]["distilled_cfg_scale"] == 3.5


async def test_higher_priority_runs_first_then_arrival_order(
    daemon: Daemon, standin: StandinHandle
) -> None:
    first = await hold_a_running_task(daemon, standin, {"prompt": "first"})
    low = await daemon.enqueue({"prompt": "low"})
    high = await daemon.enqueue({"prompt": "high", "priority": 5})
    also_low = await daemon.enqueue({"prompt": "also low"})

    queue = await (await daemon.client.get(f"{API}/queue")).json()
    assert [t["task_id"] for t in queue["running"]] == [first]
    assert [t["task_id"] for t in queue["pending"]] == [high, low, also_low]
    assert [t["position"] for t in queue["pending"]] == [0, 1, 2]
    assert queue["total_pending"] == 3

    standin.state.release()
    await daemon.wait_status(also_low, "done")
    prompts = [body["prompt"] for _, body in standin.state.requests]
    assert prompts == ["first", "high", "low", "also low"]


async def test_the_queue_is_paged_and_bad_pages_get_400(
    daemon: Daemon, standin: StandinHandle
) -> None:
    standin.state.hold()
    ids = [await daemon.enqueue({"prompt": str(n)}) for n in range(6)]
    await standin.state.wait_generations(1)

    page = await daemon.client.get(f"{API}/queue?offset=1&limit=2")
    assert [t["task_id"] for t in (await page.json())["pending"]] == ids[2:4]
    for query in ["limit=-1", "limit=100000", "offset=x"]:
        bad = await daemon.client.get(f"{API}/queue?{query}")
        assert bad.status == 400, query
        assert (await bad.json())["error"] == "invalid_query"
    standin.state.release()


async def test_unknown_ids_digests_and_routes_answer_json_errors(
    daemon: Daemon,
) -> None:
    cases = [
        (f"{API}/task/nope", 404, "task_not_found"),
        (f"{API}/task/nope/results", 404, "task_not_found"),
        (f"{API}/images/{'0' * 64}", 404, "image_not_found"),
        (f"{API}/images/not-a-digest", 400, "invalid_digest"),
        (f"{API}/images/{'A' * 64}", 400, "invalid_digest"),
        (f"{API}/no-such-route", 404, "not_found"),
    ]
    for path, status, code in cases:
        response = await daemon.client.get(path)
        body = await response.json()
        assert (response.status, body["error"]) == (status, code), path
        assert body["message"]

    wrong_method = await daemon.client.delete(f"{API}/health")
    assert wrong_method.status == 405
    assert (await wrong_method.json())["error"] == "method_not_allowed"


async def test_img2img_inputs_go_to_the_store_not_the_journal(
    daemon: Daemon, standin: StandinHandle
) -> None:
    init = tiny_png(16, 16, shade=1)
    mask = tiny_png(16, 16, shade=2)
    init_b64 = base64.b64encode(init).decode()
    body = {
        "init_images": ["data:image/png;base64," + init_b64],
        "mask": base64.b64encode(mask).decode(),
        "denoising_strength": 0.5,
    }

    task_id = await daemon.enqueue(body, kind="img2img")
    task = await daemon.wait_status(task_id, "done")

    digest = hashlib.sha256(init).hexdigest()
    assert task["request"]["init_images"] == [{"digest": digest}]
    assert task["request"]["mask"] == {"digest": hashlib.sha256(mask).hexdigest()}
    journal = (daemon.config.data_dir / "journal.jsonl").read_bytes()
    assert init_b64.encode() not in journal
    sent = standin.state.requests[-1][1]
    assert base64.b64decode(sent["init_images"][0]) == init
    assert base64.b64decode(sent["mask"]) == mask
    assert daemon.runtime.store.path_for(digest).read_bytes() == init


async def test_img2img_without_a_valid_image_is_refused(daemon: Daemon) -> None:
    cases = [
        ({}, "init_images"),
        ({"init_images": []}, "init_images"),
        ({"init_images": ["bm90IGFuIGltYWdl"]}, "init_images[0]"),
        ({"init_images": [base64.b64encode(tiny_png()).decode()], "mask": "x"}, "mask"),
    ]
    for body, field in cases:
        response = await daemon.client.post(f"{API}/queue/img2img", json=body)
        answer = await response.json()
        assert response.status == 422, body
        assert answer["field"] == field


async def test_a_checkpoint_becomes_the_override_setting(
    daemon: Daemon, standin: StandinHandle
) -> None:
    checkpoint = "sd_xl_base_1.0.safetensors [31e35c80fc]"
    body = {
        "checkpoint": checkpoint,
        "override_settings": {"CLIP_stop_at_last_layers": 2},
    }

    await daemon.wait_status(await daemon.enqueue(body), "done")

    sent = standin.state.requests[-1][1]
    assert sent["override_settings"] == {
        "CLIP_stop_at_last_layers": 2,
        "sd_model_checkpoint": checkpoint,
    }
    assert "checkpoint" not in sent


async def test_an_idempotency_key_gives_back_the_first_task_across_restarts(
    daemon: Daemon,
) -> None:
    headers = {"Idempotency-Key": "order-17"}
    first = await daemon.client.post(f"{API}/queue/txt2img", json={}, headers=headers)
    again = await daemon.client.post(f"{API}/queue/txt2img", json={}, headers=headers)
    assert (first.status, again.status) == (202, 200)
    task_id = (await first.json())["task_id"]
    assert (await again.json())["task_id"] == task_id

    await daemon.restart()
    after = await daemon.client.post(f"{API}/queue/txt2img", json={}, headers=headers)

    assert after.status == 200
    assert (await after.json())["task_id"] == task_id
    assert len(daemon.runtime.queue.state.tasks) == 1


async def test_health_reports_the_webui_the_queue_and_the_journal(
    daemon: Daemon, standin: StandinHandle
) -> None:
    await daemon.wait_status(await daemon.enqueue(), "done")

    health = await (await daemon.client.get(f"{API}/health")).json()

    assert health["status"] == "ok"
    assert health["upstream"] == {"url": standin.url, "reachable": True, "error": None}
    assert health["queue"] == {"pending": 0, "running": 0}
    journal = daemon.config.data_dir / "journal.jsonl"
    assert health["journal"]["bytes"] == journal.stat().st_size
    assert health["journal"]["records"] == len(journal.read_bytes().splitlines())
    assert orjson.loads(journal.read_bytes().splitlines()[0])["op"] == "enqueue"


async def test_a_body_over_the_limit_gets_413_as_json(
    aiohttp_client: AiohttpClient, daemon_config: Config
) -> None:
    daemon = Daemon(aiohttp_client, daemon_config)
    await daemon.start(max_body_bytes=1024)

    response = await daemon.client.post(
        f"{API}/queue/txt2img", json={"prompt": "x" * 2048}
    )

    body = await response.json()
    assert response.status == 413
    assert body["error"] == "body_too_large"
    assert "--max-body-bytes" in body["message"]
    assert daemon.runtime.queue.journal.last_seq == 0
    await daemon.stop()


def test_an_answer_with_an_integer_past_64_bits_is_still_json() -> None:
    # The webui's progress echoes whatever step count it was sent; orjson
    # refuses integers past 64 bits.
    response = json_response({"sampling_steps": 10**30})

    assert isinstance(response.body, bytes)
    assert json.loads(response.body) == {"sampling_steps": 10**30}


async def test_an_empty_checkpoint_name_means_no_override(daemon: Daemon) -> None:
    task_id = await daemon.enqueue({"checkpoint": "", "vae": ""})

    request = daemon.runtime.queue.state.tasks[task_id].request
    assert "override_settings" not in request
