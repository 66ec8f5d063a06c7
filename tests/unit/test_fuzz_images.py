"""Property-based fuzzing of the image decoder (issue #13): real PNG, JPEG, GIF (and a Tux Paint stamp) bytes,
mutated (byte flips, truncation, insertions, header fields set to arbitrary numbers, with the PNG header's CRC
fixed so that the edit is read). `validate_image` either accepts or raises `ImageRejected`, never anything
else; an accepted image decodes with `decode_rgb`; Python-side memory stays bounded."""
from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.errors import ImageRejected
from core.images import decode_rgb, validate_image
from tests.helpers import TUXPAINT, jpeg_bytes, png_bytes

PEAK_CAP = 64 * 1024 * 1024  # bytes traced by tracemalloc per example (inputs are a few kB)


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    frames = [Image.new("P", (40, 30), i) for i in (1, 2)]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], transparency=0)
    return buf.getvalue()


def stamp_bytes() -> bytes | None:
    stamps = sorted(TUXPAINT.rglob("*.png"))[:1] if TUXPAINT.is_dir() else []
    data = stamps[0].read_bytes() if stamps else None
    return data if data is not None and len(data) < 200_000 else None


SEEDS = {"png": png_bytes(seed=1, size=(48, 32)), "png-rgba": png_bytes(mode="RGBA", size=(20, 20)),
         "jpeg": jpeg_bytes(seed=2, size=(64, 48)), "gif": gif_bytes()}
if stamp_bytes():
    SEEDS["tuxpaint"] = stamp_bytes()  # type: ignore[assignment]


def fix_png_crc(data: bytearray) -> None:
    """Recompute the CRC of the PNG's IHDR chunk, so that an edited width, height or depth is read, not refused."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 33 and data[12:16] == b"IHDR":
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))


@st.composite
def mutated(draw) -> bytes:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "header-int", "delete"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        else:  # a size, count or length field in the first bytes set to an arbitrary number
            at = draw(st.integers(0, min(len(data), 64) - 1))
            fmt = draw(st.sampled_from([">I", "<I", ">H", "<H"]))
            value = draw(st.integers(0, 2 ** (8 * struct.calcsize(fmt)) - 1))
            data[at:at + struct.calcsize(fmt)] = struct.pack(fmt, value)
            fix_png_crc(data)
    return bytes(data)


def check(data: bytes) -> None:
    tracemalloc.start()
    try:
        try:
            info = validate_image(data)
        except ImageRejected:
            return
        assert info.width >= 1 and info.height >= 1
        try:
            img = decode_rgb(data, 224)
        except ImageRejected:
            return
        assert img.mode == "RGB" and img.size[0] >= 1
        _, peak = tracemalloc.get_traced_memory()
        assert peak < PEAK_CAP, f"{peak} bytes traced for a {len(data)}-byte input"
    finally:
        tracemalloc.stop()


def test_the_seeds_are_accepted():
    for name, data in SEEDS.items():
        assert validate_image(data).width > 0, name
        assert decode_rgb(data, 224).mode == "RGB"


@settings(max_examples=200, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=mutated())
def test_mutated_images_are_accepted_or_rejected_cleanly(data):
    check(data)


@pytest.mark.parametrize("width,height", [(10240, 10240), (65535, 1), (1, 1), (0, 5), (2 ** 31 - 1, 2 ** 31 - 1)])
def test_png_headers_claiming_any_size_are_handled(width, height):
    data = bytearray(SEEDS["png"])
    data[16:24] = struct.pack(">II", width, height)
    fix_png_crc(data)
    check(bytes(data))
