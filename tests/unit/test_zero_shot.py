"""Zero-shot from tag names: the maths, and the use case over fakes with a backbone that has a text side."""
import numpy as np
import pytest

from core import errors
from core.model import Tag, TagType
from core.zero_shot import TEXT_CACHE, probabilities, regular_tags, tag_predictions
from tests.helpers import FakeBackbone, FakeTextBackbone, png_bytes

RED, GREEN, BLUE = (230, 20, 20), (20, 230, 20), (20, 20, 230)
VECTORS = {"red": (1, 0, 0, 0), "green": (0, 1, 0, 0), "blue": (0, 0, 1, 0), "teal": (0, 0.7, 0.7, 0)}


def test_an_image_equal_to_a_tags_text_vector_gets_that_tag_first():
    text = np.eye(3, 5, dtype=np.float32)
    for k in range(3):
        p = probabilities(text[k] * 3.0, text)[0]  # the image side is normalised too
        assert int(np.argmax(p)) == k and p.sum() == pytest.approx(1.0)
        assert p[k] > 0.99  # cosine 1 against 0, times 100


def test_rows_sum_to_one_and_the_logit_scale_sharpens():
    rng = np.random.default_rng(0)
    images, text = rng.normal(size=(6, 8)), rng.normal(size=(4, 8))
    soft, sharp = probabilities(images, text, 1.0), probabilities(images, text, 100.0)
    assert soft.shape == (6, 4) and np.allclose(soft.sum(axis=1), 1) and np.allclose(sharp.sum(axis=1), 1)
    assert (sharp.max(axis=1) > soft.max(axis=1)).all()
    assert (np.argmax(sharp, axis=1) == np.argmax(soft, axis=1)).all()  # a scale orders nothing differently


def test_negative_tags_take_no_part_and_order_is_stable():
    tags = [Tag("p", "b", TagType.Regular, id="2"), Tag("p", "Negative", TagType.Negative, id="9"),
            Tag("p", "A", TagType.Regular, id="1")]
    assert [t.name for t in regular_tags(tags)] == ["A", "b"]
    preds = tag_predictions(regular_tags(tags), np.array([0.25, 0.75]))
    assert [(p.tag_name, p.probability) for p in preds] == [("b", 0.75), ("A", 0.25)]


@pytest.fixture
def text_cv(cv):
    cv.deps.backbones.backbone = FakeTextBackbone(VECTORS)
    return cv


def _project(cv, names, domain="General", ctype="Multiclass"):
    p = cv.projects.create(f"zs {domain} {ctype}", domain=domain, classification_type=ctype)
    cv.tags.get_or_create(p.id, names)
    return p


def test_a_project_without_iteration_answers_from_its_tag_names(text_cv):
    p = _project(text_cv, ["red", "green", "blue", "negative"])
    pred = text_cv.predictions.predict(p.id, png_bytes(RED))
    assert pred.zero_shot and pred.iteration_id is None and not pred.stored
    assert pred.predictions[0].tag_name == "red"
    assert {x.tag_name for x in pred.predictions} == {"red", "green", "blue"}  # Negative excluded
    assert sum(x.probability for x in pred.predictions) == pytest.approx(1.0)
    assert text_cv.predictions.predict(p.id, png_bytes(BLUE), store=False).predictions[0].tag_name == "blue"
    assert text_cv.predictions.list(p.id) == []  # never stored, also when store=True was asked


def test_multilabel_gets_the_same_shares_over_its_tags(text_cv):
    p = _project(text_cv, ["green", "blue", "teal"], ctype="Multilabel")
    pred = text_cv.predictions.predict(p.id, png_bytes((20, 200, 200)))
    assert pred.zero_shot and pred.predictions[0].tag_name == "teal"
    assert sum(x.probability for x in pred.predictions) == pytest.approx(1.0)


def test_text_embeddings_are_computed_once_per_tag_name(text_cv):
    backbone = text_cv.deps.backbones.backbone
    p = _project(text_cv, ["red", "green"])
    for _ in range(3):
        text_cv.predictions.predict(p.id, png_bytes(GREEN), store=False)
    text_cv.tags.get_or_create(p.id, ["blue"])
    assert text_cv.predictions.predict(p.id, png_bytes(BLUE), store=False).predictions[0].tag_name == "blue"
    assert sorted(map(sorted, backbone.text_calls)) == [["blue"], ["green", "red"]]
    assert TEXT_CACHE.cached(backbone) == 3


def test_a_backbone_without_text_tower_still_says_train_it_first(cv):
    assert not FakeBackbone.zero_shot
    for domain in ("Compact", "General"):  # the registry says no; the loaded backbone says no
        p = _project(cv, ["red", "green"], domain=domain)
        with pytest.raises(errors.NoDefaultIteration, match="train it first$"):
            cv.predictions.predict(p.id, png_bytes(RED))


def test_fewer_than_two_tags_says_what_to_add(text_cv):
    p = _project(text_cv, ["red", "negative"])
    with pytest.raises(errors.NoDefaultIteration, match="at least 2 tags"):
        text_cv.predictions.predict(p.id, png_bytes(RED))


def test_a_named_iteration_or_publish_name_keeps_azures_errors(text_cv):
    p = _project(text_cv, ["red", "green"])
    with pytest.raises(errors.NotFound):
        text_cv.predictions.predict(p.id, png_bytes(RED), publish_name="prod")
    with pytest.raises(errors.NoDefaultIteration):
        text_cv.predictions.predict(p.id, png_bytes(RED), publish_name="default")
    with pytest.raises(errors.NotFound):
        text_cv.predictions.predict(p.id, png_bytes(RED), iteration_id="00000000-0000-0000-0000-000000000000")


def test_missing_weights_keep_the_no_iteration_code_and_say_why(text_cv):
    def unavailable(domain):
        raise errors.BackboneUnavailable("Domain General needs CLIP weights for ViT-B-32")

    text_cv.deps.backbones.for_domain = unavailable
    p = _project(text_cv, ["red", "green"])
    with pytest.raises(errors.NoDefaultIteration, match="needs the General weights: Domain General needs CLIP"):
        text_cv.predictions.predict(p.id, png_bytes(RED))
    one = _project(text_cv, ["red"], domain="Food")  # too few tags is told without trying to load a model
    with pytest.raises(errors.NoDefaultIteration, match="at least 2 tags"):
        text_cv.predictions.predict(one.id, png_bytes(RED))
