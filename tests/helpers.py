"""Test helpers: real image files made with Pillow, real data-set locations, a fake backbone for core unit tests."""
from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from core.backbones.base import Backbone, Preprocessing

TUXPAINT = Path("/usr/share/tuxpaint/stamps")
DEBIAN_DATA = ("tuxpaint-stamps-default", "dataset-fashion-mnist")


def missing_debian_data(package: str) -> str:
    """Why a test or benchmark that needs one of Debian's data packages cannot run, and how to install it."""
    return (f"needs Debian's {package}, which is not installed: apt-get install {' '.join(DEBIAN_DATA)} "
            f"(or `make testdata` as root)")


def png_bytes(color=(200, 30, 30), size=(64, 48), mode="RGB", seed: int | None = None) -> bytes:
    if seed is not None:
        rng = np.random.default_rng(seed)
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        img = Image.fromarray(arr)
    else:
        img = Image.new(mode, size, color)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(color=(10, 120, 200), size=(80, 60), seed: int | None = None, quality=90) -> bytes:
    img = Image.open(io.BytesIO(png_bytes(color, size, seed=seed))).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def colour_images(n: int, base: tuple[int, int, int], seed: int, size=(64, 64)) -> list[bytes]:
    """n distinct, clearly-coloured images (noise around a base colour): a task any real backbone separates."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        arr = np.clip(np.array(base) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def tuxpaint_categories(min_images: int = 30) -> dict[str, list[Path]]:
    cats = {}
    if not TUXPAINT.is_dir():
        return cats
    for d in sorted(TUXPAINT.iterdir()):
        if d.is_dir():
            files = sorted(d.rglob("*.png"))
            if len(files) >= min_images:
                cats[d.name] = files
    return cats


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeBackbone(Backbone):
    """Mean colour of the image as a 3-d 'embedding' (plus a constant), deterministic and instant."""

    id = "fake-mean-colour"
    dim = 4
    preprocessing = Preprocessing(size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def __init__(self):
        self.calls = 0
        self.batch_sizes: list[int] = []

    def forward(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.batch_sizes.append(len(batch))
        means = batch.mean(axis=(2, 3))
        return np.concatenate([means, np.full((len(batch), 1), 0.1, np.float32)], axis=1).astype(np.float32)


class FakeTextBackbone(FakeBackbone):
    """FakeBackbone with a text side (as CLIP's): each tag name's 'text embedding' is the vector the test gives it
    (unit length), so an image's mean colour points at the tag named for that colour. Records each text call."""

    id = "fake-mean-colour-text"
    zero_shot = True

    def __init__(self, vectors: dict[str, tuple[float, ...]], scale: float = 100.0):
        super().__init__()
        self.vectors = vectors
        self.scale = scale
        self.text_calls: list[list[str]] = []

    def text_features(self, tag_names: list[str]) -> np.ndarray:
        self.text_calls.append(list(tag_names))
        v = np.array([self.vectors[n] for n in tag_names], np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def logit_scale(self) -> float:
        return self.scale


def env_with(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update({"CVBOT_DATA_DIR": str(tmp_path / "data"), "CVBOT_LOG_LEVEL": "WARNING"})
    env.pop("DATABASE_URL", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env
