"""Every domain exports: a CLIP domain's file holds the image tower, CLIP's normalisation and the probe in one graph.
Weights cannot be downloaded here, so the tower has random weights (a local checkpoint made from them) and the test
checks graph parity with the server on the same weights, never accuracy."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.backbones import BackboneProvider, BackboneSettings
from core.model import ClassificationType
from core.usecases import ImageUpload
from tests.conftest import make_cv
from tests.export_support import Trained, labels, sample_pixels
from tests.helpers import colour_images

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow

MODEL = "ViT-S-32"  # the architecture of ViT-B-32, smaller: the same graph code, a quicker export


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "vit-s-32-random.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model(MODEL, pretrained=None).state_dict(), path)
    return path


def _trained(tmp_path, checkpoint, runtime: str, multilabel: bool) -> Trained:
    provider = BackboneProvider(BackboneSettings(cache_dir=str(tmp_path / "models"), runtime=runtime,
                                                 clip={"Food": {"model": MODEL, "checkpoint": str(checkpoint)}}))
    cv = make_cv(tmp_path, provider)
    ctype = ClassificationType.Multilabel if multilabel else ClassificationType.Multiclass
    p = cv.projects.create("clip", domain="Food", classification_type=ctype)
    ups = []
    for n, (name, rgb) in enumerate((("red", (220, 30, 30)), ("green", (30, 200, 40)), ("blue", (30, 40, 220)))):
        tag = cv.tags.create(p.id, name)
        ups += [ImageUpload(d, f"{name}{i}.png", [tag.id]) for i, d in enumerate(colour_images(6, rgb, n, (96, 96)))]
    cv.images.add(p.id, ups)
    it = cv.training.wait(p.id, cv.training.train(p.id).id, timeout=600)
    assert it.status.value == "Completed", it.failure_reason
    assert it.backbone_id.startswith(f"clip-{MODEL}@ckpt-")
    tests = colour_images(3, (200, 60, 60), 7, (120, 120)) + colour_images(3, (60, 60, 200), 8, (120, 120))
    return Trained(cv, p.id, it.id, tests)


@pytest.mark.parametrize("runtime,multilabel", [("auto", False), ("torch", True)])
def test_a_clip_iteration_exports_one_graph_with_the_servers_answers(tmp_path, checkpoint, runtime, multilabel):
    """runtime auto: the tower comes from the serving export in the model cache; torch: it is exported from the
    loaded network at export time. Either way the file gives the server's probabilities."""
    trained = _trained(tmp_path, checkpoint, runtime, multilabel)
    package = trained.export("ONNX")
    assert set(package.namelist()) == {"model.onnx", "labels.txt", "cvexport.manifest"}  # weights inside the file
    import onnx

    model = onnx.load_from_string(package.read("model.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["backbone"].startswith(f"clip-{MODEL}@ckpt-") and props["domain"] == "Food"
    assert props["Image.BitmapPixelFormat"] == "Bgr8"
    assert json.loads(package.read("cvexport.manifest"))["ClassificationType"] == (
        "Multilabel" if multilabel else "Multiclass")
    session = ort.InferenceSession(package.read("model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape[1:] == [3, 224, 224]
    names, worst = labels(package), 0.0
    for data in trained.test_images:
        scores = session.run(None, {inp.name: sample_pixels(data, 224, "BGR", 255.0)})[0][0]
        served = trained.server(data)
        expected = np.array([served[n] for n in names])
        assert int(np.argmax(scores)) == int(np.argmax(expected))
        worst = max(worst, float(np.abs(scores - expected).max()))
    assert abs(float(scores.sum()) - 1) > 1e-3 if multilabel else abs(float(scores.sum()) - 1) < 1e-4
    print(f"CLIP {MODEL} ({runtime}) export: max |p_onnx - p_server| = {worst:.2e}")
    assert worst <= 1e-4, worst
    if runtime == "auto":  # float16 holds for a transformer tower too
        half = trained.export("ONNX", "ONNXFloat16")
        session = ort.InferenceSession(half.read("model.onnx"), providers=["CPUExecutionProvider"])
        worst = 0.0
        for data in trained.test_images:
            scores = session.run(None, {"data": sample_pixels(data, 224, "BGR", 255.0, dtype=np.float16)})[0][0]
            served = trained.server(data)
            worst = max(worst, max(abs(float(scores[i]) - served[n]) for i, n in enumerate(names)))
        print(f"CLIP {MODEL} ONNXFloat16: max |p_onnx - p_server| = {worst:.2e}")
        assert worst <= 2e-3, worst
