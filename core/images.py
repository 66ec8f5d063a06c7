"""Image validation (Custom Vision's limits) and decoding to RGB for the models."""
from __future__ import annotations

import functools
import hashlib
import io
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image as PILImage

from .errors import ImageRejected

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
    return Image


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
    """Check an uploaded file fully (format, size, dimensions, integrity). Raises ImageRejected."""
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
    draft = _draft(img, DRAFT_MIN_SIDE)
    try:
        # decodes the whole stream (at reduced DCT scale for large JPEGs): catches truncated and corrupt files
        img.load()
    except ImageRejected:
        raise
    except Exception as e:  # noqa: BLE001
        raise ImageRejected("ErrorImageFormat", f"corrupt or truncated {fmt} file: {e}") from e
    try:
        if img.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8):  # rotated a quarter turn on display
            width, height = height, width
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject an otherwise fine image
        pass
    _remember(data, draft, img)
    return ImageInfo(sha256=sha256_of(data), format=fmt, width=width, height=height, size_bytes=len(data))


# validate_image decodes large JPEGs at the smallest DCT scale that keeps this many pixels on the shorter side
# (what the 224-pixel models need), and hands its decoded image to the decode_rgb call that usually follows
# (a prediction: validate, then embed), so that the image is decoded once.
DRAFT_MIN_SIDE = 224
ORIENTATION = 0x0112
_DECODED_MAX = 4
_decoded: OrderedDict[int, tuple[bytes, tuple[int, int] | None, PILImage.Image]] = OrderedDict()
_decoded_lock = threading.Lock()


def _draft_request(img: PILImage.Image, min_side: int | None) -> tuple[int, int] | None:
    """The draft size that makes a JPEG's decoder use the smallest DCT scale whose shorter side is still
    >= min_side (None: decode at full size)."""
    if min_side and img.format == "JPEG":
        w, h = img.size
        scale = min(w, h) / float(min_side)
        if scale >= 2:
            return int(w / scale) + 1, int(h / scale) + 1
    return None


def _draft(img: PILImage.Image, min_side: int | None) -> tuple[int, int] | None:
    """Apply `_draft_request` to the decoder; returns the request."""
    request = _draft_request(img, min_side)
    if request is not None:
        img.draft("RGB", request)
    return request


def _remember(data: bytes, draft: tuple[int, int] | None, img: PILImage.Image) -> None:
    """Keep a decode for the next decode_rgb of the very same bytes object (the entry holds `data`, so its
    id cannot be reused while it is kept: no need to hash the bytes again)."""
    if img.width * img.height > 4_000_000:  # keep the hand-over cache small
        return
    with _decoded_lock:
        _decoded[id(data)] = (data, draft, img)
        while len(_decoded) > _DECODED_MAX:
            _decoded.popitem(last=False)


def _recall(data: bytes, draft: tuple[int, int] | None) -> PILImage.Image | None:
    with _decoded_lock:
        entry = _decoded.get(id(data))
        if entry is None or entry[0] is not data or entry[1] != draft:
            return None
        del _decoded[id(data)]
        return entry[2]


def decode_rgb(data: bytes, min_side: int | None = None) -> PILImage.Image:
    """Decode to RGB: first frame, EXIF orientation applied, transparency composited on white.

    With `min_side`, JPEGs are decoded in draft mode at the smallest scale whose shorter side is
    still at least `min_side` (much faster for photos far larger than the model's input).
    """
    Image = _pil()
    img: PILImage.Image = Image.open(io.BytesIO(data))
    request = _draft_request(img, min_side)
    decoded = _recall(data, request) if _decoded else None
    if decoded is not None:  # decoded (identically) by validate_image just before
        img = decoded
    elif request is not None:
        img.draft("RGB", request)
    img.seek(0)
    try:
        if img.getexif().get(ORIENTATION, 1) != 1:  # (exif_transpose would copy even an upright image)
            from PIL import ImageOps

            img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block: keep the pixels as stored (validate_image accepts it)
        pass
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        # pasting through the alpha channel onto white gives the same pixels as alpha_composite over an
        # opaque white image (checked on every Tux Paint stamp), in one pass
        background: PILImage.Image = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")
