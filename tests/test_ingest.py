"""Streaming a generation answer into the store, piece by piece."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from inuqueue.ingest import AnswerMalformed, AnswerParser, ingest_answer
from inuqueue.store import ImageStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_like(size: int) -> bytes:
    return PNG_MAGIC + os.urandom(size)


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    store = ImageStore(tmp_path / "images")
    store.open()
    return store


@pytest.mark.parametrize("chunk_size", [1, 3, 64, 100_000])
async def test_images_land_in_the_store_and_other_members_parse(
    store: ImageStore, chunk_size: int
) -> None:
    images = [_png_like(3000), _png_like(10)]
    info = {"seed": 5, "infotexts": ['a "quoted" {brace} [x]']}
    answer = orjson.dumps(
        {
            "images": [base64.b64encode(i).decode() for i in images],
            "parameters": {"prompt": 'p}]"', "nested": [{"a": [1, 2]}], "n": None},
            "info": orjson.dumps(info).decode(),
        }
    )

    result = await ingest_answer(_chunks(answer, chunk_size), store)

    assert [i.digest for i in result.images] == [
        hashlib.sha256(i).hexdigest() for i in images
    ]
    for image, data in zip(result.images, images, strict=True):
        assert store.path_for(image.digest).read_bytes() == data
        assert image.content_type == "image/png"
        assert image.bytes == len(data)
    assert result.members["parameters"]["prompt"] == 'p}]"'
    assert orjson.loads(result.members["info"]) == info
    assert list((store.root / "tmp").iterdir()) == []


async def test_member_order_whitespace_and_escaped_slashes_are_accepted(
    store: ImageStore,
) -> None:
    data = _png_like(500)
    encoded = base64.b64encode(data).decode().replace("/", "\\/")
    answer = (
        '\n{ "info" : "{}" ,\n "steps": 20, "ok": true,'
        f' "images" : [ "{encoded}" ] , "parameters" : {{ }} }}\n'
    ).encode()

    result = await ingest_answer(_chunks(answer, 7), store)

    assert store.path_for(result.images[0].digest).read_bytes() == data
    assert result.members == {"info": "{}", "steps": 20, "ok": True, "parameters": {}}


async def test_an_answer_cut_short_raises_and_leaves_no_temp_file(
    store: ImageStore,
) -> None:
    encoded = base64.b64encode(_png_like(3_000_000)).decode()
    answer = orjson.dumps({"images": [encoded], "info": "{}"})

    with pytest.raises(AnswerMalformed):
        await ingest_answer(_chunks(answer[: len(answer) // 2], 65536), store)

    assert list((store.root / "tmp").iterdir()) == []
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


def test_the_same_image_twice_is_stored_once(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    store.open()
    data = _png_like(100)
    first = store._put_bytes_sync(data)
    second = store._put_bytes_sync(data)

    assert first == second
    assert [p for p in store.root.rglob("*") if p.is_file()] == [
        store.path_for(first.digest)
    ]


@pytest.mark.parametrize(
    "text",
    ["[1, 2]", '{"images": [1]}', '{"images": ["AAAA"] "info": 1}', '{"a": tru'],
)
def test_what_is_not_a_generation_answer_is_refused(text: str) -> None:
    parser = AnswerParser()
    with pytest.raises(AnswerMalformed):
        parser.feed(text.encode())
        parser.close()
