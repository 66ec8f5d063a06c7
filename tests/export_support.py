"""What the export tests of every platform share: a Compact iteration trained on real images, test images as the
issue fixes them (RGB, square, PNG, at most 448 px), and the pixel conventions of Microsoft's export samples,
re-implemented from their description (whole-image resize, no crop, channel order, range, layout).
"""
from __future__ import annotations

import io
import time
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image

from core.usecases import ImageUpload, export_file
from tests.helpers import tuxpaint_categories

CATEGORIES = 3
TRAIN_PER_CATEGORY = 10
TEST_PER_CATEGORY = 4


def square_rgb_png(path, side: int = 448) -> bytes:
    """A stamp on white, padded to a square and scaled to fit `side`: RGB, no alpha, lossless."""
    img = Image.open(path)
    img.load()
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    n = max(rgb.size)
    canvas = Image.new("RGB", (n, n), (255, 255, 255))
    canvas.paste(rgb, ((n - rgb.width) // 2, (n - rgb.height) // 2))
    if n > side:
        canvas = canvas.resize((side, side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    canvas.save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Trained:
    cv: object                      # core.usecases.UseCases
    project_id: str
    iteration_id: str
    test_images: list[bytes]        # held out, as square RGB PNGs

    def server(self, data: bytes) -> dict[str, float]:
        """cvbot's own answer for one image: tag name -> probability."""
        result = self.cv.predictions.predict(self.project_id, data, iteration_id=self.iteration_id, store=False)
        return {p.tag_name: p.probability for p in result.predictions}

    def export(self, platform: str, flavor: str | None = None, timeout: float = 600) -> zipfile.ZipFile:
        export = self.cv.exports.start(self.project_id, self.iteration_id, platform, flavor)
        deadline = time.monotonic() + timeout
        while export.status == "Exporting" and time.monotonic() < deadline:
            time.sleep(0.2)
            export = next(e for e in self.cv.exports.list(self.project_id, self.iteration_id) if e.id == export.id)
        assert export.status == "Done", export.failure_reason
        return zipfile.ZipFile(io.BytesIO(export_file(self.cv.deps, self.iteration_id, export.id)))


def train_compact(cv) -> Trained:
    """A Multiclass Compact project on CATEGORIES Tux Paint categories, trained and Completed."""
    cats = dict(list(tuxpaint_categories(TRAIN_PER_CATEGORY + TEST_PER_CATEGORY).items())[:CATEGORIES])
    assert len(cats) == CATEGORIES, "needs the tuxpaint-stamps-default package"
    project = cv.projects.create("export", domain="Compact")
    uploads, tests = [], []
    for name, files in cats.items():
        tag = cv.tags.create(project.id, name)
        for i, f in enumerate(files[:TRAIN_PER_CATEGORY + TEST_PER_CATEGORY]):
            data = square_rgb_png(f)
            if i < TRAIN_PER_CATEGORY:
                uploads.append(ImageUpload(data, f"{name}-{i}", [tag.id]))
            else:
                tests.append(data)
    cv.images.add(project.id, uploads)
    it = cv.training.wait(project.id, cv.training.train(project.id).id, timeout=300)
    assert it.status.value == "Completed", it.failure_reason
    return Trained(cv, project.id, it.id, tests)


def sample_pixels(data: bytes, size: int, colors: str = "BGR", scale: float = 255.0,
                  layout: str = "NCHW", dtype=np.float32) -> np.ndarray:
    """The tensor an export sample feeds: the whole image resized to size x size, channels in `colors` order,
    values in 0..scale, batch of one in `layout`."""
    img = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    if colors == "BGR":
        arr = arr[:, :, ::-1]
    arr = arr * (scale / 255.0)
    if layout == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr[None]).astype(dtype)


def labels(package: zipfile.ZipFile) -> list[str]:
    return package.read("labels.txt").decode().splitlines()
