"""The content-addressed image store."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from inuqueue.errors import ImageDecodeError, StoreError
from inuqueue.store import ImageStore, decode_image_input, sniff_content_type

PNG = b"\x89PNG\r\n\x1a\n" + b"rest of a png"


async def test_images_fan_out_by_digest_and_read_back_verified(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    store.open()

    stored = await store.put_bytes(PNG)

    digest = hashlib.sha256(PNG).hexdigest()
    assert stored.digest == digest
    assert (
        store.path_for(digest)
        == tmp_path / "images" / digest[:2] / digest[2:4] / digest
    )
    assert await store.read_verified(digest) == PNG


async def test_damaged_bytes_are_never_handed_out(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    store.open()
    stored = await store.put_bytes(PNG)
    store.path_for(stored.digest).write_bytes(PNG + b"!")

    with pytest.raises(StoreError, match="does not hash to its name"):
        await store.read_verified(stored.digest)


def test_temp_files_left_by_a_crash_are_removed_at_open(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    store.open()
    (store.tmp_dir / "half.part").write_bytes(b"x")

    store.open()

    assert list(store.tmp_dir.iterdir()) == []


def test_anything_but_a_digest_has_no_path(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    for bad in ["../../etc/passwd", "A" * 64, "ab" * 31]:
        with pytest.raises(ValueError):
            store.path_for(bad)


def test_inputs_decode_like_the_webui_reads_them() -> None:
    raw = base64.b64encode(PNG).decode()

    assert decode_image_input(raw) == PNG
    assert decode_image_input("data:image/png;base64," + raw) == PNG
    # Junk characters are dropped, as the webui's non-strict decoding does.
    assert decode_image_input(raw[:8] + "\n" + raw[8:]) == PNG


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "not a PNG"),
        (base64.b64encode(b"plain text").decode(), "not a PNG"),
        (base64.b64encode(PNG).decode()[:-2] + "=", "not valid base64"),
        ("data:image/png,nothing", "no ';base64,' part"),
    ],
)
def test_bad_inputs_say_what_is_wrong(value: str, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image_input(value)


def test_content_types_come_from_the_bytes() -> None:
    assert sniff_content_type(PNG) == "image/png"
    assert sniff_content_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_content_type(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff_content_type(b"GIF89a") == "image/gif"
    assert sniff_content_type(b"%PDF-1.7") is None
