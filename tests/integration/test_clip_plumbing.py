"""CLIP domains: plumbing only. Weights cannot be downloaded here, so these tests build ViT-B-32 with random
weights (or a local checkpoint made from them) and never claim accuracy."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from core import errors
from core.backbones import BackboneProvider, BackboneSettings, ClipBackbone, registry_entry
from core.model import IterationStatus
from core.usecases import ImageUpload
from tests.conftest import make_cv
from tests.helpers import colour_images, png_bytes


@pytest.fixture(scope="module")
def random_clip(tmp_path_factory):
    return ClipBackbone("General", random_init_for_tests=True,
                        settings=BackboneSettings(cache_dir=str(tmp_path_factory.mktemp("m"))))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, random_clip):
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "vit-b-32-random.pt"
    torch.save(random_clip._net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def clip_cache(tmp_path_factory):
    """One model cache for the checkpoint's ONNX export (made once, by the first backbone built on it)."""
    return tmp_path_factory.mktemp("clip-cache")


@pytest.fixture(scope="module")
def onnx_clip(checkpoint, clip_cache):
    return ClipBackbone("General", checkpoint=str(checkpoint), settings=BackboneSettings(cache_dir=str(clip_cache)))


@pytest.fixture(scope="module")
def torch_clip(checkpoint, clip_cache):
    return ClipBackbone("General", checkpoint=str(checkpoint),
                        settings=BackboneSettings(cache_dir=str(clip_cache), runtime="torch"))


def test_shapes_preprocessing_and_text_side(random_clip):
    assert random_clip.dim == 512 and random_clip.preprocessing.size == 224
    assert random_clip.id == "clip-ViT-B-32@random-init"
    from core.images import decode_rgb

    x = np.stack([random_clip.preprocess(decode_rgb(png_bytes(size=(300, 200))))] * 2)
    assert x.shape == (2, 3, 224, 224)
    f = random_clip.forward(x)
    assert f.shape == (2, 512) and np.allclose(f[0], f[1], atol=1e-5)
    text = random_clip.text_features(["cat", "pizza"])
    assert text.shape == (2, 512) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)


def test_each_domain_keeps_its_prompt_templates():
    assert any("a type of food" in t for t in registry_entry("Food").prompt_templates)
    assert any("landmark" in t for t in registry_entry("Landmarks").prompt_templates)
    assert all(registry_entry(d).exportable for d in ("Compact", "General", "Food", "Landmarks", "Retail", "Adult"))


def test_missing_weights_fail_with_a_message_that_says_how_to_fix(tmp_path):
    with pytest.raises(errors.BackboneUnavailable) as e:
        ClipBackbone("Food", checkpoint=str(tmp_path / "missing.safetensors"))
    msg = e.value.message
    assert "Food" in msg and "ViT-B-32" in msg and "CVBOT_FOOD_CHECKPOINT" in msg and "Compact" in msg
    with pytest.raises(errors.BackboneUnavailable, match="no-such-tag"):
        ClipBackbone("General", pretrained="no-such-tag")


def test_local_checkpoint_loads_the_same_weights(onnx_clip, random_clip):
    assert onnx_clip.id.startswith("clip-ViT-B-32@ckpt-")
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    assert np.allclose(onnx_clip.forward(x), random_clip.forward(x), atol=1e-4)


def test_the_onnx_image_tower_matches_torch_on_the_same_weights(onnx_clip, torch_clip, random_clip):
    assert random_clip.runtime == onnx_clip.runtime == "onnx" and torch_clip.runtime == "torch"
    assert random_clip.onnx_path().is_file() and onnx_clip.onnx_path().is_file()  # what benchmark 1 opens too
    assert onnx_clip.id == torch_clip.id and onnx_clip.dim == torch_clip.dim == 512
    assert onnx_clip.preprocessing == torch_clip.preprocessing
    x = np.random.default_rng(1).normal(size=(3, 3, 224, 224)).astype(np.float32)
    assert np.abs(onnx_clip.forward(x) - torch_clip.forward(x)).max() < 1e-4
    assert np.allclose(onnx_clip.text_features(["cat"]), torch_clip.text_features(["cat"]), atol=1e-5)


_FROM_CACHE = """
import json, sys
import numpy as np
from core.backbones import BackboneSettings, ClipBackbone
bb = ClipBackbone("General", checkpoint=sys.argv[1], settings=BackboneSettings(cache_dir=sys.argv[2]))
f = bb.forward(np.zeros((2, 3, 224, 224), np.float32))
print(json.dumps({"runtime": bb.runtime, "id": bb.id, "shape": list(f.shape), "first": f[0, :4].tolist(),
                  "torch": "torch" in sys.modules, "open_clip": "open_clip" in sys.modules}))
"""


def test_a_cached_export_serves_without_importing_torch(onnx_clip, checkpoint, clip_cache):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", _FROM_CACHE, str(checkpoint), str(clip_cache)], cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["runtime"] == "onnx" and got["id"] == onnx_clip.id and got["shape"] == [2, 512]
    assert not got["torch"] and not got["open_clip"]
    expected = onnx_clip.forward(np.zeros((1, 3, 224, 224), np.float32))[0, :4]
    assert np.allclose(got["first"], expected, atol=1e-5)


def _copy_export(src, dst_dir):
    for suffix in ("", ".data", ".json"):
        shutil.copyfile(f"{src}{suffix}", dst_dir / f"{src.name}{suffix}")
    return dst_dir / src.name


@pytest.mark.parametrize("damage", ["truncated graph", "truncated weights", "no sidecar", "sidecar of other weights"])
def test_a_damaged_export_in_the_cache_is_made_again(damage, onnx_clip, checkpoint, tmp_path, monkeypatch):
    good = onnx_clip.onnx_path()
    path = _copy_export(good, tmp_path)
    damaged = {"truncated graph": path, "truncated weights": path.with_name(path.name + ".data"),
               "no sidecar": None, "sidecar of other weights": None}[damage]
    if damaged:
        damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    sidecar = path.with_name(path.name + ".json")
    if damage == "no sidecar":
        sidecar.unlink()
    elif damage == "sidecar of other weights":
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "id": "clip-ViT-B-32@other"}))
    exports = []

    def export(self, out):  # the real export is tested above; here only what makes the cache rebuild
        exports.append(out)
        _copy_export(good, out.parent)

    monkeypatch.setattr(ClipBackbone, "_export_in_child", export)
    bb = ClipBackbone("General", checkpoint=str(checkpoint), settings=BackboneSettings(cache_dir=str(tmp_path)))
    assert exports == [path] and bb.runtime == "onnx"
    x = np.random.default_rng(2).normal(size=(1, 3, 224, 224)).astype(np.float32)
    assert np.allclose(bb.forward(x), onnx_clip.forward(x), atol=1e-6)


def test_a_broken_checkpoint_fails_with_the_fix_and_leaves_no_export(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(errors.BackboneUnavailable) as e:
        ClipBackbone("Landmarks", checkpoint=str(bad), settings=BackboneSettings(cache_dir=str(tmp_path / "m")))
    assert "CVBOT_LANDMARKS_CHECKPOINT" in e.value.message and "Compact" in e.value.message
    assert not list((tmp_path / "m").glob("*.onnx*"))


def test_when_the_export_fails_the_same_weights_run_in_torch(checkpoint, onnx_clip, tmp_path, monkeypatch, caplog):
    def fail(self, out):
        raise RuntimeError("exporter error")

    monkeypatch.setattr(ClipBackbone, "_export_in_child", fail)
    bb = ClipBackbone("General", checkpoint=str(checkpoint), settings=BackboneSettings(cache_dir=str(tmp_path)))
    assert bb.runtime == "torch" and bb.id == onnx_clip.id and "exporter error" in caplog.text
    x = np.random.default_rng(3).normal(size=(1, 3, 224, 224)).astype(np.float32)
    assert np.abs(bb.forward(x) - onnx_clip.forward(x)).max() < 1e-4
    with pytest.raises(RuntimeError, match="exporter error"):
        ClipBackbone("General", checkpoint=str(checkpoint),
                     settings=BackboneSettings(cache_dir=str(tmp_path), runtime="onnx"))


def _two_tag_project(cv, domain: str):
    p = cv.projects.create(f"{domain} project", domain=domain)
    a, b = cv.tags.create(p.id, "a"), cv.tags.create(p.id, "b")
    cv.images.add(p.id, [ImageUpload(d, "", [a.id]) for d in colour_images(5, (200, 0, 0), 1)] +
                  [ImageUpload(d, "", [b.id]) for d in colour_images(5, (0, 0, 200), 2)])
    return p


def test_training_a_clip_project_without_weights_fails_clearly(tmp_path):
    provider = BackboneProvider(BackboneSettings(cache_dir=str(tmp_path / "m"),
                                                 clip={"Retail": {"checkpoint": str(tmp_path / "nope.pt")}}))
    cv = make_cv(tmp_path, provider)
    p = _two_tag_project(cv, "Retail")
    it = cv.training.wait(p.id, cv.training.train(p.id).id, timeout=120)
    assert it.status == IterationStatus.Failed
    assert "Retail" in it.failure_reason and "Compact" in it.failure_reason
    assert cv.projects.get(p.id).default_iteration_id is None


def test_clip_project_trains_on_a_local_checkpoint_and_caches_embeddings(tmp_path, checkpoint, clip_cache):
    provider = BackboneProvider(BackboneSettings(cache_dir=str(clip_cache),
                                                 clip={"General": {"checkpoint": str(checkpoint)}}))
    cv = make_cv(tmp_path, provider)
    p = _two_tag_project(cv, "General")
    it = cv.training.wait(p.id, cv.training.train(p.id).id, timeout=300)
    assert it.status == IterationStatus.Completed, it.failure_reason
    assert it.backbone_id.startswith("clip-ViT-B-32@ckpt-") and cv.deps.stats.images == 10
    pred = cv.predictions.predict(p.id, colour_images(1, (200, 0, 0), 9)[0], store=False)
    assert len(pred.predictions) == 2  # plumbing only: random weights say nothing about accuracy
    cv.projects.update(p.id, domain="Compact")  # a domain change applies from the next training
    it2 = cv.training.wait(p.id, cv.training.train(p.id).id, timeout=300)
    assert it2.backbone_id.startswith("efficientnet-lite0@") and cv.deps.stats.images == 20
