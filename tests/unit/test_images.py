import io

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageRejected
from core.images import MAX_EDGE, decode_rgb, validate_image
from tests.helpers import jpeg_bytes, png_bytes


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _status(data: bytes, **kw) -> str:
    with pytest.raises(ImageRejected) as e:
        validate_image(data, **kw)
    return e.value.status


def test_accepts_every_supported_format():
    img = Image.new("RGB", (40, 30), (1, 2, 3))
    for fmt in ("JPEG", "PNG", "BMP", "GIF", "WEBP"):
        info = validate_image(_save(img, fmt))
        assert (info.width, info.height) == (40, 30), fmt


def test_small_images_are_accepted_and_upscaled_for_the_model():
    info = validate_image(png_bytes(size=(20, 10)))
    assert (info.width, info.height) == (20, 10)


def test_rejects_text_as_wrong_format():
    assert _status(b"hello, I am not an image") == "ErrorImageFormat"


def test_rejects_empty_file():
    assert _status(b"") == "ErrorImageFormat"


def test_rejects_truncated_jpeg():
    data = jpeg_bytes(size=(400, 300), seed=1)
    assert _status(data[: len(data) // 2]) == "ErrorImageFormat"


def test_rejects_unsupported_format_tiff():
    assert _status(_save(Image.new("RGB", (10, 10)), "TIFF")) == "ErrorImageFormat"


def test_rejects_oversize_bytes_before_decoding():
    data = png_bytes(size=(64, 64))
    assert _status(data, max_bytes=len(data) - 1) == "ErrorImageSize"


def test_rejects_longest_edge_over_limit():
    img = Image.new("1", (MAX_EDGE + 1, 1000))
    assert _status(_save(img, "PNG")) == "ErrorImageDimensions"


def test_rejects_extreme_aspect_ratio():
    assert _status(png_bytes(size=(2600, 100))) == "ErrorImageDimensions"
    validate_image(png_bytes(size=(2500, 100)))  # exactly 25:1 is allowed


def _png_header_only(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_rejects_decompression_bomb_from_its_header():
    data = _png_header_only(60_000, 60_000)  # 3.6 gigapixels claimed by a file of a few dozen bytes
    with pytest.raises(ImageRejected) as e:
        validate_image(data)
    assert e.value.status == "ErrorImageDimensions"
    assert "bomb" in e.value.message


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    data = _save(img, "JPEG", exif=exif.tobytes())
    info = validate_image(data)
    assert (info.width, info.height) == (20, 60)
    assert decode_rgb(data).size == (20, 60)


def test_transparency_is_composited_on_white():
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgb = np.asarray(decode_rgb(_save(img, "PNG")))
    assert rgb.shape == (10, 10, 3)
    assert (rgb == 255).all()


def test_gif_first_frame():
    frames = [Image.new("P", (10, 10), i) for i in (1, 2)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    first = np.asarray(decode_rgb(buf.getvalue()))
    expected = np.asarray(frames[0].convert("RGB"))
    assert (first == expected).all()


def test_sha256_identifies_content():
    a, b = png_bytes((1, 2, 3)), png_bytes((1, 2, 4))
    assert validate_image(a).sha256 == validate_image(a).sha256
    assert validate_image(a).sha256 != validate_image(b).sha256


def test_jpeg_draft_decoding_keeps_enough_resolution():
    data = jpeg_bytes(size=(2000, 1500), seed=3)
    img = decode_rgb(data, min_side=224)
    assert min(img.size) >= 224 and max(img.size) < 2000


def test_draft_decoding_still_rejects_truncated_large_jpegs():
    from PIL import Image as PILImage

    img = PILImage.open(io.BytesIO(jpeg_bytes(size=(2000, 1500), seed=4)))
    for progressive in (False, True):
        data = _save(img, "JPEG", quality=90, progressive=progressive)
        validate_image(data, max_bytes=len(data))
        for frac in (0.5, 0.99):
            assert _status(data[: int(len(data) * frac)], max_bytes=len(data)) == "ErrorImageFormat"


def test_validate_then_decode_gives_the_same_pixels_as_decoding_alone():
    data = jpeg_bytes(size=(1200, 900), seed=5)
    alone = np.asarray(decode_rgb(data, min_side=224))
    validate_image(data)  # hands its (draft) decode over to the next decode_rgb of the same bytes
    after = np.asarray(decode_rgb(data, min_side=224))
    assert after.shape == alone.shape and (after == alone).all()
    assert np.array_equal(np.asarray(decode_rgb(data, min_side=224)), alone)  # used once, then decoded again


def test_oriented_size_from_exif_with_draft_decoding():
    img = Image.new("RGB", (1200, 500), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 8
    info = validate_image(_save(img, "JPEG", exif=exif.tobytes()))
    assert (info.width, info.height) == (500, 1200)


def test_partial_transparency_is_blended_onto_white_like_alpha_compositing():
    rng = np.random.default_rng(6)
    arr = rng.integers(0, 256, (23, 31, 4), dtype=np.uint8)
    img = Image.fromarray(arr, "RGBA")
    expected = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB")
    assert np.array_equal(np.asarray(decode_rgb(_save(img, "PNG"))), np.asarray(expected))
    la = img.convert("LA")
    white = Image.new("RGBA", la.size, (255, 255, 255, 255))
    expected_la = Image.alpha_composite(white, la.convert("RGBA")).convert("RGB")
    assert np.array_equal(np.asarray(decode_rgb(_save(la, "PNG"))), np.asarray(expected_la))
