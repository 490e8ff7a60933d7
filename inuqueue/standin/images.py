"""Pure-Python PNG writing and reading, and the decoding of images sent to the webui.

Pictures are a diagonal colour ramp chosen by the seed (same seed, same bytes), or
seeded noise when incompressible data is wanted. The infotext goes in a ``tEXt``
chunk named ``parameters`` (``iTXt`` when it is not Latin-1), as Pillow writes it.
"""

from __future__ import annotations

import base64
import ipaddress
import random
import struct
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from inuqueue.errors import ImageDecodeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# zlib's default effort for the ramp; noise does not compress, so it is stored.
RAMP_COMPRESS_LEVEL = 6
NOISE_COMPRESS_LEVEL = 0
_RGB_CHANNELS = 3
# Work on big buffers goes in slices this size (a multiple of 3 for base64), so a
# worker thread lets the event loop have the GIL between them.
GIL_SLICE_BYTES = 3 * 256 * 1024


def _chunk_parts(kind: bytes, data: bytes) -> list[bytes]:
    """A chunk as separate parts: big payloads are copied once, in the final join."""
    crc = zlib.crc32(data, zlib.crc32(kind))
    return [struct.pack(">I", len(data)), kind, data, struct.pack(">I", crc)]


def _text_chunk(key: str, value: str) -> list[bytes]:
    try:
        payload = key.encode("latin-1") + b"\0" + value.encode("latin-1")
        return _chunk_parts(b"tEXt", payload)
    except UnicodeEncodeError:
        # Pillow falls back to an uncompressed international chunk, in UTF-8.
        header = key.encode("latin-1") + b"\0\0\0\0\0"
        return _chunk_parts(b"iTXt", header + value.encode("utf-8"))


def encode_png(
    width: int,
    height: int,
    pixels: bytes,
    *,
    text: dict[str, str] | None = None,
    level: int = RAMP_COMPRESS_LEVEL,
) -> bytes:
    """Encode 8-bit RGB rows (without filter bytes) as a PNG."""
    stride = width * _RGB_CHANNELS
    view = memoryview(pixels)
    # Filter type 0 ("none") before each row, joined without copying rows twice.
    scanlines = b"".join(
        part
        for row in range(height)
        for part in (b"\0", view[row * stride : (row + 1) * stride])
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    parts = [PNG_SIGNATURE, *_chunk_parts(b"IHDR", header)]
    for key, value in (text or {}).items():
        parts += _text_chunk(key, value)
    parts += _chunk_parts(b"IDAT", zlib.compress(scanlines, level))
    parts += _chunk_parts(b"IEND", b"")
    return b"".join(parts)


def _fade_table(completion: float) -> bytes:
    """Byte map pulling colours toward grey, for a partly denoised picture."""
    done = min(max(completion, 0.0), 1.0)
    return bytes(round(value * done + 128 * (1 - done)) for value in range(256))


def _chunked_random(rng: random.Random, size: int) -> bytes:
    """Random bytes drawn a slice at a time, so no single call holds the GIL long."""
    return b"".join(
        rng.randbytes(min(GIL_SLICE_BYTES, size - start))
        for start in range(0, size, GIL_SLICE_BYTES)
    )


def b64encode_sliced(data: bytes) -> bytes:
    """base64 of ``data`` in slices (a multiple of 3 bytes each): same output."""
    view = memoryview(data)
    return b"".join(
        base64.b64encode(view[start : start + GIL_SLICE_BYTES])
        for start in range(0, len(data), GIL_SLICE_BYTES)
    )


def render_pixels(
    seed: int, width: int, height: int, *, completion: float = 1.0, noise: bool = False
) -> bytes:
    """RGB bytes of the picture a seed gives; ``completion`` < 1 fades it to grey."""
    rng = random.Random(seed)
    if noise:
        pixels = _chunked_random(rng, width * height * _RGB_CHANNELS)
        return pixels if completion >= 1 else pixels.translate(_fade_table(completion))
    red, green, blue = (rng.randrange(256) for _ in range(3))
    slope = rng.randrange(1, 7)
    row = bytes(
        channel
        for x in range(width)
        for channel in ((red + x) & 255, (green + 2 * x) & 255, (blue - x) & 255)
    )
    if completion < 1:
        row = row.translate(_fade_table(completion))
    doubled = row + row
    # Each row is the first one shifted sideways: a diagonal ramp, built by slicing.
    offsets = (((y * slope) % max(width, 1)) * _RGB_CHANNELS for y in range(height))
    return b"".join(doubled[offset : offset + len(row)] for offset in offsets)


def make_png(
    seed: int,
    width: int,
    height: int,
    *,
    infotext: str | None = None,
    completion: float = 1.0,
    noise: bool = False,
) -> bytes:
    """The whole PNG for one generated picture."""
    pixels = render_pixels(seed, width, height, completion=completion, noise=noise)
    text = None if infotext is None else {"parameters": infotext}
    level = NOISE_COMPRESS_LEVEL if noise else RAMP_COMPRESS_LEVEL
    return encode_png(width, height, pixels, text=text, level=level)


def make_grid_png(
    cells: list[tuple[int, float]],
    width: int,
    height: int,
    columns: int,
    *,
    infotext: str | None,
) -> bytes:
    """A grid of (seed, completion) pictures, filled row by row, empty cells black."""
    rows = -(-len(cells) // columns)
    cell_pixels = [render_pixels(s, width, height, completion=c) for s, c in cells]
    stride = width * _RGB_CHANNELS
    blank = bytes(stride)
    grid_rows: list[bytes] = []
    for grid_row in range(rows):
        row_cells = cell_pixels[grid_row * columns : (grid_row + 1) * columns]
        row_cells += [b""] * (columns - len(row_cells))
        for y in range(height):
            grid_rows.append(
                b"".join(
                    c[y * stride : (y + 1) * stride] if c else blank for c in row_cells
                )
            )
    text = None if infotext is None else {"parameters": infotext}
    return encode_png(width * columns, height * rows, b"".join(grid_rows), text=text)


def iter_png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, payload) chunks of a PNG, stopping at a truncated one."""
    chunks: list[tuple[bytes, bytes]] = []
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        payload = data[offset + 8 : offset + 8 + length]
        if len(payload) < length:
            break
        chunks.append((kind, payload))
        offset += 12 + length
    return chunks


def read_png_text(data: bytes) -> dict[str, str]:
    """Every tEXt, zTXt and iTXt entry of a PNG, as Pillow puts them in image.info."""
    entries: dict[str, str] = {}
    for kind, payload in iter_png_chunks(data):
        key, _, rest = payload.partition(b"\0")
        try:
            if kind == b"tEXt":
                entries[key.decode("latin-1")] = rest.decode("latin-1")
            elif kind == b"zTXt":
                entries[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode(
                    "latin-1"
                )
            elif kind == b"iTXt":
                flag, _method, rest = rest[0], rest[1], rest[2:]
                _lang, _, rest = rest.partition(b"\0")
                _translated, _, text = rest.partition(b"\0")
                raw = zlib.decompress(text) if flag else text
                entries[key.decode("latin-1")] = raw.decode("utf-8")
        except (zlib.error, UnicodeDecodeError, IndexError):
            continue  # Pillow skips a damaged text chunk too
    return entries


@dataclass(frozen=True)
class ImageHeader:
    """What the stand-in knows of a decoded input image."""

    format: str
    width: int
    height: int
    data: bytes


def _jpeg_size(data: bytes) -> tuple[int, int]:
    offset = 2
    while offset + 9 < len(data):
        if data[offset] != 0xFF:
            offset += 1
            continue
        marker = data[offset + 1]
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return width, height
        offset += 2 + length
    return 0, 0


def _webp_size(data: bytes) -> tuple[int, int]:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        return width, int.from_bytes(data[27:30], "little") + 1
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return 0, 0


def sniff_image(data: bytes) -> ImageHeader:
    """Recognise the formats a stock Pillow opens, or raise ImageDecodeError."""
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return ImageHeader("PNG", width, height, data)
    if data.startswith(b"\xff\xd8\xff"):
        width, height = _jpeg_size(data)
        return ImageHeader("JPEG", width, height, data)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return ImageHeader("GIF", width, height, data)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        width, height = _webp_size(data)
        return ImageHeader("WEBP", width, height, data)
    if data.startswith(b"BM") and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return ImageHeader("BMP", width, abs(height), data)
    if data[:4] in (b"II*\0", b"MM\0*"):
        return ImageHeader("TIFF", 0, 0, data)
    raise ImageDecodeError("cannot identify image file")


class ImageRequestRefused(ImageDecodeError):
    """An http(s) image input: the stand-in fetches nothing from the network."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _is_local_host(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_global
    except ValueError:
        return False


def decode_image_input(
    encoding: str, *, allow_requests: bool, forbid_local: bool
) -> ImageHeader:
    """Decode an image field like the webui: raw base64 or a data: URI; URLs refused."""
    if encoding.startswith(("http://", "https://")):
        if not allow_requests:
            raise ImageRequestRefused("Requests not allowed")
        if forbid_local and _is_local_host(urlsplit(encoding).hostname or ""):
            raise ImageRequestRefused("Request to local resource not allowed")
        raise ImageRequestRefused("Invalid image url")
    if encoding.startswith("data:image/"):
        # The webui cuts at ';' then ','; a URI without them fails outside its try.
        encoding = encoding.split(";")[1].split(",")[1]
    try:
        data = base64.b64decode(encoding)
    except ValueError as exc:  # binascii.Error (padding) and non-ASCII text
        raise ImageDecodeError("Invalid encoded image") from exc
    return sniff_image(data)
