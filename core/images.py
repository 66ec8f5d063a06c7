"""Image validation (Custom Vision's limits) and decoding to RGB for the models."""
from __future__ import annotations

import functools
import hashlib
import io
import sys
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image as PILImage

from .decode_budget import BUDGET
from .errors import Busy, ImageRejected

TRAINING_MAX_BYTES = 6 * 1024 * 1024
PREDICTION_MAX_BYTES = 4 * 1024 * 1024
MAX_EDGE = 10_240
MAX_ASPECT = 25.0
ALLOWED_FORMATS = {"JPEG", "PNG", "BMP", "GIF", "WEBP", "MPO"}
# Far above 10,240 x 10,240 would already fail the edge check; this catches bombs before decoding.
MAX_PIXELS = MAX_EDGE * MAX_EDGE


@functools.cache
def _pil() -> ModuleType:
    """PIL.Image with cvbot's limits, imported when an image is first read (starting the CLI does not need it).

    (Typed as a module, its names are Any to mypy: what they make is annotated where it is used.)"""
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    _return_freed_memory()
    return Image


def _return_freed_memory() -> None:
    """Make glibc give large freed buffers back to the system.

    After a large block is freed, glibc raises its mmap threshold up to 32 MB, so the next decodes' buffers (Pillow
    allocates images in blocks of up to 16 MB) come from per-thread heaps, which keep them once freed: decodes run one
    after another in different threads then add up in RSS (measured: one 10,240 x 10,240 decode at a time peaked at
    835 MB instead of 457 MB). A fixed threshold keeps buffers over 4 MB in their own mappings, returned on free."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-3, 4 * 2**20)  # M_MMAP_THRESHOLD (no mallopt outside glibc: nothing to do)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    format: str
    width: int
    height: int
    size_bytes: int


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _open(data: bytes) -> PILImage.Image:
    Image = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: PILImage.Image = Image.open(io.BytesIO(data))
            return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected("ErrorImageDimensions", f"image rejected as a decompression bomb: {e}",
                            "BadRequestImageDimensions") from e
    except Image.UnidentifiedImageError as e:
        raise ImageRejected("ErrorImageFormat", "not an image in a supported format (JPEG, PNG, BMP, GIF, WebP)") from e
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for garbage input
        raise ImageRejected("ErrorImageFormat", f"unreadable image: {e}") from e


def validate_image(data: bytes, max_bytes: int = TRAINING_MAX_BYTES) -> ImageInfo:
    """Check an uploaded file fully (format, size, dimensions, integrity). Raises ImageRejected, or Busy when the
    process-wide decode budget stays taken for longer than a request may wait."""
    if not data:
        raise ImageRejected("ErrorImageFormat", "empty file")
    if len(data) > max_bytes:
        raise ImageRejected(
            "ErrorImageSize",
            f"file is {len(data) / 1048576:.1f} MB; the limit is {max_bytes // 1048576} MB",
            "BadRequestImageSizeBytes",
        )
    img = _open(data)
    fmt = img.format or "?"
    if fmt not in ALLOWED_FORMATS:
        raise ImageRejected("ErrorImageFormat", f"format {fmt} is not supported (JPEG, PNG, BMP, GIF, WebP)")
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageRejected("ErrorImageDimensions", "image has no pixels", "BadRequestImageDimensions")
    if width * height > MAX_PIXELS:
        raise ImageRejected("ErrorImageDimensions",
                            f"{width}x{height} exceeds {MAX_PIXELS} pixels (decompression bomb guard)",
                            "BadRequestImageDimensions")
    if max(width, height) > MAX_EDGE:
        raise ImageRejected("ErrorImageDimensions", f"longest edge {max(width, height)} px exceeds {MAX_EDGE} px",
                            "BadRequestImageDimensions")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise ImageRejected("ErrorImageDimensions", f"aspect ratio {width}x{height} exceeds 25:1",
                            "BadRequestImageDimensions")
    plan = _plan(img, DRAFT_MIN_SIDE)
    # decodes the whole stream (at reduced DCT scale for large JPEGs): catches truncated and corrupt files; the
    # pixels are reduced for the model as they are converted, and handed to the decode_rgb that usually follows
    rgb = _decode(img, plan, BUDGET.wait_s, fmt)
    try:
        if img.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8):  # rotated a quarter turn on display
            width, height = height, width
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject an otherwise fine image
        pass
    _remember(data, plan, rgb)
    return ImageInfo(sha256=sha256_of(data), format=fmt, width=width, height=height, size_bytes=len(data))


# validate_image decodes large JPEGs at the smallest DCT scale that keeps this many pixels on the shorter side
# (what the 224-pixel models need), and hands its decoded image to the decode_rgb call that usually follows
# (a prediction: validate, then embed), so that the image is decoded once.
DRAFT_MIN_SIDE = 224
ORIENTATION = 0x0112
# Other images far larger than the model's input are reduced (box-averaged) by a whole factor as they are converted
# to RGB, keeping at least REDUCING_GAP x min_side pixels on the shorter side: the model's resize (Preprocessing.crop,
# reducing_gap=3) then sees the same pixels as before, within rounding, and no full-size RGB copy is ever made.
REDUCING_GAP = 3
# rows converted at once when reducing (about this many; a multiple of the factor): bounds the RGB copy
BAND_ROWS = 256
_DECODED_MAX = 8
_decoded: OrderedDict[int, tuple[bytes, _Plan, PILImage.Image]] = OrderedDict()
_decoded_lock = threading.Lock()


# ------------------------------------------------------------------------------------------- decoding
@dataclass(frozen=True)
class _Plan:
    draft: tuple[int, int] | None  # a JPEG's draft request (None: full scale)
    factor: int  # the whole factor the decoded pixels are reduced by as they are converted to RGB


def _draft_request(img: PILImage.Image, min_side: int | None) -> tuple[int, int] | None:
    """The draft size that makes a JPEG's decoder use the smallest DCT scale whose shorter side is still
    >= min_side (None: decode at full size)."""
    if min_side and img.format == "JPEG":
        w, h = img.size
        scale = min(w, h) / float(min_side)
        if scale >= 2:
            return int(w / scale) + 1, int(h / scale) + 1
    return None


def _plan(img: PILImage.Image, min_side: int | None) -> _Plan:
    """Apply the draft request to the decoder (the size it will decode to is then `img.size`) and choose the
    reduction factor. Reads the header only."""
    draft = _draft_request(img, min_side)
    if draft is not None:
        img.draft("RGB", draft)
    factor = max(1, min(img.size) // (min_side * REDUCING_GAP)) if min_side else 1
    return _Plan(draft, factor)


def _bytes_per_pixel(mode: str) -> int:
    """What Pillow holds per pixel in memory (RGB is stored in 4 bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _has_alpha(img: PILImage.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def _sixteen_bit(mode: str) -> bool:
    return mode.startswith("I;16") or mode == "I"


def decode_cost(img: PILImage.Image, factor: int) -> int:
    """Bytes a decode holds at its peak: the decoded image in its own mode, its RGB conversion (one band at a time
    when reduced) and the result."""
    w, h = img.size
    native = w * h * _bytes_per_pixel(img.mode)
    banded = factor > 1 or _sixteen_bit(img.mode)
    rows = _band_rows(factor) if banded else h
    out = -(-w // factor) * -(-h // factor) * 4
    if img.mode == "RGB" and not banded:
        return native
    per_pixel = 16 if _sixteen_bit(img.mode) else 12 if _has_alpha(img) else 8  # crop, conversion, composite
    return native + w * min(rows, h) * per_pixel + out


def _band_rows(factor: int) -> int:
    return factor * max(1, BAND_ROWS // factor)


def _decode(img: PILImage.Image, plan: _Plan, wait_s: float | None, fmt: str | None = None) -> PILImage.Image:
    """Decode `img` (opened, the plan applied) to RGB within the decode budget: first frame, reduced by the plan's
    factor, transparency composited on white, EXIF orientation applied. With `fmt`, errors while decoding are
    ImageRejected (validation); without, they propagate."""
    with BUDGET.hold(decode_cost(img, plan.factor), wait_s):
        try:
            img.seek(0)
            img.load()
            rgb = _to_rgb(img, plan.factor)
        except (ImageRejected, Busy):
            raise
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for corrupt data
            if fmt is None:
                raise
            raise ImageRejected("ErrorImageFormat", f"corrupt or truncated {fmt} file: {e}") from e
    try:
        orientation = img.getexif().get(ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: keep the pixels as stored (validate_image accepts it)
        orientation = 1
    method = _TRANSPOSE.get(orientation)
    return rgb if method is None else rgb.transpose(_pil().Transpose(method))


# EXIF orientation -> Image.Transpose value (what ImageOps.exif_transpose does)
_TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}


def _to_rgb(img: PILImage.Image, factor: int) -> PILImage.Image:
    """RGB pixels of a loaded image, reduced by `factor` (box average) one band of rows at a time, so that no
    full-size RGB copy of a 1-bit, palette, greyscale or 16-bit image is ever made."""
    if factor == 1 and not _sixteen_bit(img.mode):
        return _band_rgb(img)
    Image = _pil()
    w, h = img.size
    out: PILImage.Image = Image.new("RGB", (-(-w // factor), -(-h // factor)))
    rows = _band_rows(factor)
    for y in range(0, h, rows):
        band = _band_rgb(img.crop((0, y, w, min(h, y + rows))))
        out.paste(band.reduce(factor) if factor > 1 else band, (0, y // factor))
    return out


def _band_rgb(img: PILImage.Image) -> PILImage.Image:
    Image = _pil()
    if _sixteen_bit(img.mode):
        # Pillow clips 16-bit values to 255 when converting: scale 0..65535 to 0..255 (rounded) instead
        import numpy as np

        arr = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        grey = ((arr * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")  # type: ignore[no-any-return]
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        # pasting through the alpha channel onto white gives the same pixels as alpha_composite over an
        # opaque white image (checked on every Tux Paint stamp), in one pass
        background: PILImage.Image = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")


def _remember(data: bytes, plan: _Plan, img: PILImage.Image) -> None:
    """Keep a decode for the next decode_rgb of the very same bytes object (the entry holds `data`, so its
    id cannot be reused while it is kept: no need to hash the bytes again)."""
    if img.width * img.height > 4_000_000:  # keep the hand-over cache small
        return
    with _decoded_lock:
        _decoded[id(data)] = (data, plan, img)
        while len(_decoded) > _DECODED_MAX:
            _decoded.popitem(last=False)


def _recall(data: bytes, plan: _Plan) -> PILImage.Image | None:
    with _decoded_lock:
        entry = _decoded.get(id(data))
        if entry is None or entry[0] is not data or entry[1] != plan:
            return None
        del _decoded[id(data)]
        return entry[2]


def decode_rgb(data: bytes, min_side: int | None = None, wait_s: float | None = None) -> PILImage.Image:
    """Decode to RGB: first frame, EXIF orientation applied, transparency composited on white.

    With `min_side`, JPEGs are decoded in draft mode at the smallest scale whose shorter side is still at least
    `min_side`, and other images far larger are reduced by a whole factor as they are converted (see REDUCING_GAP).
    The decode waits for its share of the process-wide budget, at most `wait_s` seconds (None: as long as it takes;
    background work such as training), then raises Busy.
    """
    Image = _pil()
    img: PILImage.Image = Image.open(io.BytesIO(data))
    plan = _plan(img, min_side)
    decoded = _recall(data, plan) if _decoded else None
    if decoded is not None:  # decoded (identically) by validate_image just before
        return decoded
    return _decode(img, plan, wait_s)


# ------------------------------------------------------------------------------------------- served copies
MIME_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "GIF": "image/gif",
              "WEBP": "image/webp"}
RESIZED_QUALITY = 88


def content_type(data: bytes) -> str:
    """The MIME type of a stored image, from its header (nothing decoded)."""
    try:
        fmt = _open(data).format or ""
    except ImageRejected:
        fmt = ""
    return MIME_TYPES.get(fmt, "application/octet-stream")


def fit_jpeg(data: bytes, max_edge: int, wait_s: float | None = None) -> bytes:
    """The image as a JPEG fitting in `max_edge` x `max_edge` (aspect ratio kept, never enlarged; EXIF orientation
    applied, transparency on white, first frame). Decoded within the process-wide decode budget, at a reduced scale
    when the image is far larger (see decode_rgb); waits at most `wait_s` seconds for its share, then raises Busy."""
    Image = _pil()
    header: PILImage.Image = _open(data)
    w, h = header.size
    try:
        if header.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8):
            w, h = h, w
    except Exception:  # noqa: BLE001 - a broken EXIF block: decode_rgb keeps the pixels as stored too
        pass
    scale = min(1.0, max_edge / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    rgb = decode_rgb(data, min_side=max(1, min(size)), wait_s=wait_s)
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=RESIZED_QUALITY, optimize=True)
    return out.getvalue()
