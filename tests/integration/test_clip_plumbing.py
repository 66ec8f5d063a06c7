"""CLIP domains: plumbing only. Weights cannot be downloaded here, so these tests build ViT-B-32 with random
weights (or a local checkpoint made from them) and never claim accuracy."""
import numpy as np
import pytest

from core import errors
from core.backbones import BackboneProvider, BackboneSettings, ClipBackbone, registry_entry
from core.model import IterationStatus
from core.service import ImageUpload
from tests.conftest import make_service
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
    assert registry_entry("Compact").exportable and not registry_entry("General").exportable


def test_missing_weights_fail_with_a_message_that_says_how_to_fix(tmp_path):
    with pytest.raises(errors.BackboneUnavailable) as e:
        ClipBackbone("Food", checkpoint=str(tmp_path / "missing.safetensors"))
    msg = e.value.message
    assert "Food" in msg and "ViT-B-32" in msg and "CVBOT_FOOD_CHECKPOINT" in msg and "Compact" in msg
    with pytest.raises(errors.BackboneUnavailable, match="no-such-tag"):
        ClipBackbone("General", pretrained="no-such-tag")


def test_local_checkpoint_loads_the_same_weights(checkpoint, random_clip):
    bb = ClipBackbone("General", checkpoint=str(checkpoint))
    assert bb.id.startswith("clip-ViT-B-32@ckpt-")
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    assert np.allclose(bb.forward(x), random_clip.forward(x), atol=1e-4)


def _two_tag_project(service, domain: str):
    p = service.create_project(f"{domain} project", domain=domain)
    a, b = service.create_tag(p.id, "a"), service.create_tag(p.id, "b")
    service.add_images(p.id, [ImageUpload(d, "", [a.id]) for d in colour_images(5, (200, 0, 0), 1)] +
                       [ImageUpload(d, "", [b.id]) for d in colour_images(5, (0, 0, 200), 2)])
    return p


def test_training_a_clip_project_without_weights_fails_clearly(tmp_path):
    provider = BackboneProvider(BackboneSettings(cache_dir=str(tmp_path / "m"),
                                                 clip={"Retail": {"checkpoint": str(tmp_path / "nope.pt")}}))
    service = make_service(tmp_path, provider)
    p = _two_tag_project(service, "Retail")
    it = service.wait_for_training(service.train(p.id).id, timeout=120)
    assert it.status == IterationStatus.Failed
    assert "Retail" in it.failure_reason and "Compact" in it.failure_reason
    assert service.get_project(p.id).default_iteration_id is None


def test_clip_project_trains_on_a_local_checkpoint_and_caches_embeddings(tmp_path, checkpoint):
    provider = BackboneProvider(BackboneSettings(cache_dir=str(tmp_path / "m"),
                                                 clip={"General": {"checkpoint": str(checkpoint)}}))
    service = make_service(tmp_path, provider)
    p = _two_tag_project(service, "General")
    it = service.wait_for_training(service.train(p.id).id, timeout=300)
    assert it.status == IterationStatus.Completed, it.failure_reason
    assert it.backbone_id.startswith("clip-ViT-B-32@ckpt-") and service.images_embedded == 10
    pred = service.predict(p.id, colour_images(1, (200, 0, 0), 9)[0], store=False)
    assert len(pred.predictions) == 2  # plumbing only: random weights say nothing about accuracy
    service.update_project(p.id, domain="Compact")  # a domain change applies from the next training
    it2 = service.wait_for_training(service.train(p.id).id, timeout=300)
    assert it2.backbone_id.startswith("efficientnet-lite0@") and service.images_embedded == 20
