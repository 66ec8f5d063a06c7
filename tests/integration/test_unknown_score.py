"""The unknown score end to end in the core: a real Compact project trained on Tux Paint stamps, asked about
held-out stamps (known) and Fashion-MNIST items (far unknowns); and an iteration trained before the score."""
import json

import numpy as np
import pytest

from api import render
from core import errors
from core.model import IterationStatus
from core.probe import LinearProbe
from core.unknown import UnknownScorer
from core.usecases import ImageUpload
from core.views import prediction_json
from tests.conftest import make_cv
from tests.helpers import missing_debian_data, tuxpaint_categories

CATEGORIES = ("animals", "food", "vehicles")
TRAIN, HELD_OUT = 20, 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory, provider):
    cats = tuxpaint_categories()
    if not all(c in cats for c in CATEGORIES):
        pytest.skip(missing_debian_data("tuxpaint-stamps-default"))
    from benchmarks.common import MissingData, fashion_mnist_test

    try:
        fashion, _, _ = fashion_mnist_test(per_class=1)
    except MissingData as e:
        pytest.skip(str(e))
    cv = make_cv(tmp_path_factory.mktemp("unknown"), provider)
    p = cv.projects.create("stamps")
    known = []
    for name in CATEGORIES:
        tag = cv.tags.create(p.id, name)
        files = cats[name]
        ups = [ImageUpload(f.read_bytes(), f.name, [tag.id]) for f in files[:TRAIN]]
        assert all(r.ok for r in cv.images.add(p.id, ups))
        known += [f.read_bytes() for f in files[TRAIN:TRAIN + HELD_OUT]]
    it = cv.training.wait(p.id, cv.training.train(p.id).id, 300)
    assert it.status == IterationStatus.Completed
    return cv, p, it, known, fashion


def test_far_unknowns_score_above_known_images(trained):
    cv, p, it, known, fashion = trained
    probe = cv.deps.artifacts.probe(it.probe_key)
    scores = {}
    for kind, images in (("known", known), ("far", fashion)):
        preds = [cv.predictions.predict(p.id, d, store=False) for d in images]
        for pr in preds:
            assert pr.unknown_threshold == 0.95 and 0.0 <= pr.unknown_score <= 1.0
            assert pr.unknown == (pr.unknown_score >= 0.95)
            assert sum(t.probability for t in pr.predictions) == pytest.approx(1.0, abs=1e-5)
        scores[kind] = np.array([pr.unknown_score for pr in preds])
    # the tag probabilities are the probe's, untouched by the score
    from core.embedding import Embedder

    x = Embedder(cv.deps.backbones.for_domain(it.domain), batch_size=1, workers=1).embed_bytes([known[0]])
    pr = cv.predictions.predict(p.id, known[0], store=False)
    want = dict(zip(it.tag_names, probe.predict_proba(x)[0].tolist(), strict=True))
    assert {t.tag_name: t.probability for t in pr.predictions} == pytest.approx(want, abs=1e-6)
    assert scores["far"].mean() > scores["known"].mean() + 0.2, scores
    assert np.median(scores["far"]) > np.median(scores["known"]), scores


def test_score_shows_in_cvbot_json_and_azure_clients_ignore_it(trained):
    cv, p, it, known, fashion = trained
    pr = cv.predictions.predict(p.id, fashion[0], store=False)
    out = render.image_prediction(pr)
    assert out["unknownScore"] == pr.unknown_score and out["unknownThreshold"] == 0.95
    assert out["unknown"] is pr.unknown
    assert abs(sum(x["probability"] for x in out["predictions"]) - 1) < 1e-5
    from azure.cognitiveservices.vision.customvision.prediction.models import ImagePrediction

    parsed = ImagePrediction.deserialize(json.loads(json.dumps(out)))
    assert parsed.iteration == it.id and len(parsed.predictions) == len(CATEGORIES)


def test_the_projects_unknown_threshold_decides_the_flag(trained):
    cv, p, it, known, fashion = trained
    score = cv.predictions.predict(p.id, known[0], store=False).unknown_score
    try:
        cv.projects.update(p.id, unknown_threshold=score)
        pr = cv.predictions.predict(p.id, known[0], store=False)
        assert pr.unknown_threshold == score and pr.unknown_score == score and pr.unknown
        cv.projects.update(p.id, unknown_threshold=1.0)
        assert not cv.predictions.predict(p.id, known[0], store=False).unknown or score == 1.0
        with pytest.raises(errors.InvalidInput):
            cv.projects.update(p.id, unknown_threshold=1.5)
        assert cv.projects.get(p.id).unknown_threshold == 1.0
    finally:
        cv.projects.update(p.id, unknown_threshold=0.95)


def test_an_iteration_trained_before_the_score_answers_without_one(trained):
    cv, p, it, known, fashion = trained
    assert UnknownScorer.from_bytes(cv.deps.blobs.get(it.probe_key)) is not None
    old_key = cv.deps.blobs.put(LinearProbe.from_bytes(cv.deps.blobs.get(it.probe_key)).to_bytes())
    with cv.deps.uow() as uow:
        old = uow.iterations.get(it.id)
        new_key, old.probe_key = old.probe_key, old_key
        uow.iterations.update(old)
        uow.commit()
    try:
        pr = cv.predictions.predict(p.id, fashion[0], store=False)
        assert pr.unknown_score is None and not pr.unknown
        assert "unknownScore" not in prediction_json(pr) and "unknownScore" not in render.image_prediction(pr)
    finally:
        with cv.deps.uow() as uow:
            old = uow.iterations.get(it.id)
            old.probe_key = new_key
            uow.iterations.update(old)
            uow.commit()


def test_a_stored_prediction_reads_back_with_the_score_it_was_answered_with(trained):
    """The score and the threshold of the moment are stored (migration 0013): a later threshold change does not
    rewrite what was answered, and the API's stored-prediction JSON carries them."""
    cv, p, it, known, fashion = trained
    answered = cv.predictions.predict(p.id, fashion[0])
    assert answered.stored and answered.unknown_score is not None
    try:
        cv.projects.update(p.id, unknown_threshold=0.01)
        back = cv.predictions.get(p.id, answered.id)
        assert (back.unknown_score, back.unknown_threshold, back.unknown) == (
            answered.unknown_score, 0.95, answered.unknown)
        assert prediction_json(back)["unknownScore"] == answered.unknown_score
        listed = {x.id: x for x in cv.predictions.list(p.id)}
        assert listed[answered.id].unknown_score == answered.unknown_score
    finally:
        cv.projects.update(p.id, unknown_threshold=0.95)
        cv.predictions.delete(p.id, [answered.id])
