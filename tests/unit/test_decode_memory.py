"""Hostile images (issue #13): a tiny PNG that declares 10,240 x 10,240 pixels must not cost a full-size RGB decode,
16-bit greyscale must keep its pixels, and the process-wide decode budget bounds what is decoded at once."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core import images
from core.decode_budget import DecodeBudget
from core.errors import Busy
from core.images import MAX_EDGE, decode_rgb, validate_image
from tests.helpers import TUXPAINT

Image.MAX_IMAGE_PIXELS = MAX_EDGE * MAX_EDGE  # building the test image itself must not warn


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def one_bit_bomb(size: int = MAX_EDGE) -> bytes:
    """A 1-bit PNG of size x size pixels that is a few kB on disk: a black disc on white."""
    img = Image.new("1", (size, size), 1)
    ImageDraw.Draw(img).ellipse((size // 8, size // 8, size * 7 // 8, size * 7 // 8), fill=0)
    return _png(img)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = one_bit_bomb()
    assert len(data) < 200_000
    return data


def test_a_10240_pixel_one_bit_png_is_valid_and_reduced_before_any_rgb_conversion(bomb, monkeypatch):
    converted: list[tuple[str, str, tuple[int, int]]] = []
    convert = Image.Image.convert

    def spy(self, mode=None, *args, **kwargs):
        converted.append((self.mode, mode, self.size))
        return convert(self, mode, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", spy)
    info = validate_image(bomb, images.PREDICTION_MAX_BYTES)  # Azure accepts up to 10,240 px a side
    assert (info.width, info.height) == (MAX_EDGE, MAX_EDGE)
    rgb = decode_rgb(bomb, min_side=224)
    assert min(rgb.size) >= 224 * 3 and rgb.mode == "RGB"
    widest = max((w * h for _, to, (w, h) in converted if to in ("RGB", "RGBA")), default=0)
    assert widest <= MAX_EDGE * 512, f"converted {widest:,} pixels to RGB at once: {converted[:4]}"
    # the reduction keeps the picture: a dark disc in the middle, white corners
    arr = np.asarray(rgb)
    assert arr[arr.shape[0] // 2, arr.shape[1] // 2].max() < 10 and arr[2, 2].min() > 245


_PEAK = """
import json, sys, resource
from core.images import decode_rgb, validate_image
data = open(sys.argv[1], "rb").read()
def peak():
    f = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
    return int(f["VmHWM"].split()[0]) / 1024
before = peak()
validate_image(data, 4 * 1024 * 1024)
img = decode_rgb(data, min_side=224)
print(json.dumps({"before_mb": before, "after_mb": peak(), "size": img.size}))
"""


def test_decoding_the_one_bit_bomb_costs_about_its_native_bytes_not_a_full_rgb_copy(bomb, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    out = subprocess.run([sys.executable, "-c", "import PIL.Image, numpy\n" + _PEAK, str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # 10,240^2 pixels held at 1 byte each is 100 MB; an RGB copy would add 400 MB
    assert r["after_mb"] - r["before_mb"] <= 200, r


def _sixteen_bit_pair() -> tuple[bytes, bytes]:
    """A real picture as 8-bit greyscale and the same as 16-bit greyscale (v * 257: the exact 16-bit value)."""
    stamps = sorted(TUXPAINT.rglob("*.png"))[:1] if TUXPAINT.is_dir() else []
    if stamps:
        src = Image.open(stamps[0])
        src = src.convert("RGBA")
        white = Image.new("RGBA", src.size, (255, 255, 255, 255))
        grey = Image.alpha_composite(white, src).convert("L")
    else:  # a smooth synthetic picture when Debian's tuxpaint stamps are missing
        y, x = np.mgrid[0:120, 0:160]
        grey = Image.fromarray(((np.sin(x / 9) * np.cos(y / 13) + 1) * 127.5).astype(np.uint8), "L")
    arr8 = np.asarray(grey)
    sixteen = Image.fromarray(arr8.astype(np.uint16) * 257)
    return _png(grey), _png(sixteen)


def test_sixteen_bit_greyscale_png_decodes_to_the_same_pixels_as_its_eight_bit_version():
    eight, sixteen = _sixteen_bit_pair()
    assert Image.open(io.BytesIO(sixteen)).mode.startswith("I")
    validate_image(sixteen)
    a = np.asarray(decode_rgb(eight), np.int16)
    b = np.asarray(decode_rgb(sixteen), np.int16)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1, f"{(b == 255).mean():.0%} of the 16-bit pixels decoded white"


def test_sixteen_bit_reduced_decoding_matches_too():
    y, x = np.mgrid[0:1500, 0:1400]
    arr8 = ((np.sin(x / 50) * np.cos(y / 70) + 1) * 127.5).astype(np.uint8)
    eight = _png(Image.fromarray(arr8, "L"))
    sixteen = _png(Image.fromarray(arr8.astype(np.uint16) * 257))
    a = np.asarray(decode_rgb(eight, min_side=224), np.int16)
    b = np.asarray(decode_rgb(sixteen, min_side=224), np.int16)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1


# ------------------------------------------------------------------------------------------- the budget
def test_an_over_budget_decode_runs_alone_and_the_next_one_waits_then_gets_busy():
    budget = DecodeBudget(capacity=100, reserve=10, wait_s=0.2, max_waiting=4)
    with budget.hold(1000, wait_s=0.2):  # over budget: takes everything but the small-image reserve
        assert budget.used == 90
        t = time.monotonic()
        with pytest.raises(Busy) as e, budget.hold(50, wait_s=0.2):
            pass
        assert 0.15 <= time.monotonic() - t < 2
        assert e.value.http_status == 503 and e.value.retry_after >= 1
        with budget.hold(10, wait_s=0.2):  # a small image still fits in the reserve
            assert budget.used == 100
    assert budget.used == 0


def test_a_waiting_decode_proceeds_when_the_budget_frees():
    budget = DecodeBudget(capacity=100, reserve=10, wait_s=5, max_waiting=4)
    done: list[float] = []

    def other():
        with budget.hold(80, wait_s=5):
            done.append(time.monotonic())

    with budget.hold(80, wait_s=5):
        th = threading.Thread(target=other)
        th.start()
        time.sleep(0.1)
        assert not done and budget.waiting == 1
        released = time.monotonic()
    th.join(5)
    assert done and done[0] >= released


def test_too_many_waiting_decodes_are_refused_at_once():
    budget = DecodeBudget(capacity=100, reserve=10, wait_s=5, max_waiting=0)
    with budget.hold(90, wait_s=5):
        t = time.monotonic()
        with pytest.raises(Busy), budget.hold(50, wait_s=5):
            pass
        assert time.monotonic() - t < 1


def test_background_decodes_wait_without_limit():
    budget = DecodeBudget(capacity=100, reserve=10, wait_s=0.05, max_waiting=0)
    got: list[bool] = []

    def worker():
        with budget.hold(90, wait_s=None):
            got.append(True)

    with budget.hold(90, wait_s=None):
        th = threading.Thread(target=worker)
        th.start()
        time.sleep(0.2)
        assert not got
    th.join(5)
    assert got


def test_validation_refuses_with_busy_when_the_process_budget_is_taken(bomb, monkeypatch):
    budget = DecodeBudget(capacity=64 * 2**20, reserve=8 * 2**20, wait_s=0.1, max_waiting=4)
    monkeypatch.setattr(images, "BUDGET", budget)
    with budget.hold(10**12, wait_s=None), pytest.raises(Busy):
        validate_image(bomb)
    assert budget.used == 0
    validate_image(bomb)  # alone, the same image is accepted
    assert budget.used == 0
