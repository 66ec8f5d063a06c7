"""Labelling help (issue #14, parts 2 and 3): the suggestion order and the audit ranking on synthetic arrays, and the
use cases on fakes (a real probe trained on FakeBackbone's mean-colour 'embeddings')."""
import numpy as np
import pytest

from core import errors
from core.labelling import audit_ranking, entropy, suggestion_order, tags_key, uncertainty
from core.model import ClassificationType
from core.usecases import ImageUpload
from tests.helpers import png_bytes


# ------------------------------------------------------------------ rules
def test_uncertainty_is_one_minus_the_margin_and_entropy_is_shannons():
    P = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.5, 0.5, 0.0]])
    assert np.allclose(uncertainty(P), [1 - 0.85, 1 - 0.05, 1.0])
    assert np.allclose(entropy(P)[:2], [-(P[i] * np.log(P[i])).sum() for i in range(2)])
    M = np.array([[0.99, 0.02], [0.6, 0.1], [0.5, 0.99]])  # multilabel: the most doubtful tag counts
    assert np.allclose(uncertainty(M, multilabel=True), [1 - 0.96, 1 - 0.2, 1.0])
    assert entropy(M, multilabel=True)[2] > entropy(M, multilabel=True)[0]


def test_uncertainty_alone_puts_the_least_sure_first():
    P = np.array([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3], [0.5, 0.5]])
    order = suggestion_order(P, np.eye(4), diversity=False, balance=False)
    assert order.tolist() == [3, 1, 2, 0]


def test_near_duplicates_do_not_fill_a_batch():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=16)
    far = rng.normal(size=(6, 16))
    X = np.vstack([centre + 0.01 * rng.normal(size=(6, 16)), far])  # six copies of one image, six others
    P = np.array([[0.52, 0.48]] * 6 + [[0.6, 0.4]] * 6)  # the copies are the least sure
    order = suggestion_order(P, X)
    assert order[0] < 6 and all(i >= 6 for i in order[1:4])  # one copy, then the others
    plain = suggestion_order(P, X, diversity=False, balance=False)
    assert set(plain[:6].tolist()) == set(range(6))  # without diversity the copies would come first
    assert sorted(order.tolist()) == list(range(12))


def test_balance_spreads_a_batch_over_the_predicted_tags():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 32))
    P = np.array([[0.55, 0.45, 0.0]] * 10 + [[0.0, 0.35, 0.65]] * 10)  # tag 0's images are less sure
    order = suggestion_order(P, X, diversity=False)
    first = P[order[:6]].argmax(1)
    assert 2 <= (first == 2).sum() <= 4
    assert (P[suggestion_order(P, X, diversity=False, balance=False)[:6]].argmax(1) == 0).all()


def test_images_like_the_labelled_ones_come_later():
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    P = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert suggestion_order(P, X, labelled=np.array([[1.0, 0.01]])).tolist() == [1, 0]
    assert suggestion_order(P, X, labelled=np.array([[0.01, 1.0]])).tolist() == [0, 1]


def test_the_greedy_limit_hands_the_rest_over_to_uncertainty():
    rng = np.random.default_rng(2)
    P = rng.dirichlet([1, 1, 1], size=50)
    order = suggestion_order(P, rng.normal(size=(50, 8)), limit=10)
    rest = order[10:]
    u = uncertainty(P)
    assert sorted(order.tolist()) == list(range(50)) and np.all(np.diff(u[rest]) <= 1e-12)


def test_audit_puts_planted_flips_first_and_suggests_the_true_tag():
    rng = np.random.default_rng(3)
    n, k = 200, 4
    truth = rng.integers(0, k, n)
    P = np.full((n, k), 0.05)
    P[np.arange(n), truth] = 0.85
    P += rng.uniform(0, 0.05, P.shape)
    P /= P.sum(1, keepdims=True)
    stored = truth.copy()
    flipped = rng.choice(n, 10, replace=False)
    stored[flipped] = (truth[flipped] + 1) % k
    Y = np.eye(k)[stored]
    ranking = audit_ranking(Y, P)
    assert {e.row for e in ranking[:10]} == set(flipped.tolist())
    assert all(e.suggested == [truth[e.row]] for e in ranking[:10])
    assert all(0.0 <= e.score <= 1.0 for e in ranking) and ranking[0].score > 0.5 > ranking[-1].score
    scores = [e.score for e in ranking]
    assert scores == sorted(scores, reverse=True)


def test_multilabel_audit_scores_the_worst_tag():
    Y = np.array([[1, 0], [1, 1], [0, 1]])
    P = np.array([[0.9, 0.1], [0.95, 0.05], [0.2, 0.6]])
    ranking = audit_ranking(Y, P, multilabel=True)
    assert ranking[0].row == 1 and ranking[0].score == pytest.approx(0.95) and ranking[0].suggested == [0]
    assert tags_key(["b", "a", "b"]) == "a,b" == tags_key(("a", "b"))


# ------------------------------------------------------------------ use cases on fakes
def _red(i):
    return png_bytes((190 + i, 20 + i, 30), size=(8, 8))


def _blue(i):
    return png_bytes((25 + i, 30, 190 + i), size=(8, 8))


@pytest.fixture
def trained(cv):
    """A project trained on 8 red and 8 blue images, one red image stored as blue, and three untagged images."""
    p = cv.projects.create("labels", classification_type=ClassificationType.Multiclass)
    red, blue = cv.tags.create(p.id, "red"), cv.tags.create(p.id, "blue")
    ups = [ImageUpload(_red(i), f"red{i}", [red.id]) for i in range(8)]
    ups += [ImageUpload(_blue(i), f"blue{i}", [blue.id]) for i in range(8)]
    ups += [ImageUpload(_red(20), "wrong", [blue.id])]
    ups += [ImageUpload(png_bytes((200, 25, 25), size=(8, 8)), "u-red"),
            ImageUpload(png_bytes((110, 25, 110), size=(8, 8)), "u-purple"),
            ImageUpload(png_bytes((20, 25, 205), size=(8, 8)), "u-blue")]
    results = cv.images.add(p.id, ups)
    assert all(r.status == "OK" for r in results)
    ids = {r.source_name: r.image.id for r in results}
    it = cv.training.train(p.id)
    cv.deps.runner.run_all()
    assert cv.iterations.get(p.id, it.id).status.value == "Completed"
    return p, red, blue, ids


def test_suggestions_score_the_untagged_pool_most_useful_first(cv, trained):
    p, red, blue, ids = trained
    s = cv.labelling.suggest(p.id)
    assert [x.image.original_name for x in s][0] == "u-purple"  # the one between the colours
    by_name = {x.image.original_name: x for x in s}
    assert set(by_name) == {"u-red", "u-purple", "u-blue"}
    assert by_name["u-red"].best.tag_name == "red" and by_name["u-blue"].best.tag_name == "blue"
    assert by_name["u-purple"].uncertainty > by_name["u-red"].uncertainty
    assert all(abs(sum(t.probability for t in x.predictions) - 1) < 1e-5 for x in s)
    only = cv.labelling.suggest(p.id, image_ids=[ids["u-red"], "not-an-image"])
    assert [x.image.id for x in only] == [ids["u-red"]]


def test_skip_moves_an_image_last_and_confirm_tags_it(cv, trained):
    p, red, blue, ids = trained
    cv.labelling.skip(p.id, ids["u-purple"], "U1")
    s = cv.labelling.suggest(p.id)
    assert s[-1].image.id == ids["u-purple"] and s[-1].skipped and not s[0].skipped
    cv.labelling.confirm(p.id, ids["u-red"], [red.id], "U1")
    assert cv.images.get_many(p.id, [ids["u-red"]])[0].tag_ids == [red.id]
    assert ids["u-red"] not in {x.image.id for x in cv.labelling.suggest(p.id)}


def test_audit_finds_the_planted_mistake_and_remembers_the_answer(cv, trained):
    p, red, blue, ids = trained
    items = cv.labelling.audit(p.id)
    assert items[0].image.id == ids["wrong"]
    assert items[0].tag_names == ["blue"] and items[0].suggested_names == ["red"] and items[0].score > 0.5
    assert len(items) == 17
    cv.labelling.keep(p.id, ids["wrong"], "U1")
    assert ids["wrong"] not in [x.image.id for x in cv.labelling.audit(p.id)]
    assert ids["wrong"] in [x.image.id for x in cv.labelling.audit(p.id, include_decided=True)]
    cv.images.set_tags(p.id, [ids["wrong"]], [red.id])  # tags changed: the audit may ask again
    items = cv.labelling.audit(p.id)
    wrong = next(x for x in items if x.image.id == ids["wrong"])
    assert wrong.score < 0.5 and wrong.tag_names == ["red"]


def test_retag_changes_the_tags_and_records_the_answer(cv, trained):
    p, red, blue, ids = trained
    cv.labelling.retag(p.id, ids["wrong"], [red.id], "U2")
    assert cv.images.get_many(p.id, [ids["wrong"]])[0].tag_ids == [red.id]
    assert ids["wrong"] not in [x.image.id for x in cv.labelling.audit(p.id)]
    with cv.deps.uow() as uow:
        d = uow.decisions.for_project(p.id, "audit")[ids["wrong"]]
    assert d.decision == "retag" and d.decided_by == "U2" and d.tags_key == red.id


def test_labelling_needs_a_trained_iteration_and_the_scope(cv):
    p = cv.projects.create("fresh")
    with pytest.raises(errors.NoDefaultIteration):
        cv.labelling.suggest(p.id)
    with pytest.raises(errors.NoDefaultIteration):
        cv.labelling.audit(p.id)


def test_prediction_scope_cannot_answer(cv, trained):
    from core.usecases import Role, Scope, UseCases

    p, red, blue, ids = trained
    reader = UseCases(cv.deps, Scope.of("default", Role.Prediction))
    with pytest.raises(errors.CvError):
        reader.labelling.keep(p.id, ids["wrong"])
    with pytest.raises(errors.CvError):
        reader.labelling.skip(p.id, ids["u-red"])


def test_multilabel_projects_get_suggestions_and_an_audit(cv):
    p = cv.projects.create("multi", classification_type=ClassificationType.Multilabel)
    red, blue = cv.tags.create(p.id, "red"), cv.tags.create(p.id, "blue")
    ups = [ImageUpload(_red(i), f"red{i}", [red.id]) for i in range(7)]
    ups += [ImageUpload(_blue(i), f"blue{i}", [blue.id]) for i in range(7)]
    ups += [ImageUpload(_blue(20), "wrong", [red.id])]
    ups += [ImageUpload(png_bytes((200, 25, 25), size=(8, 8)), "u-red"),
            ImageUpload(png_bytes((110, 25, 110), size=(8, 8)), "u-purple")]
    ids = {r.source_name: r.image.id for r in cv.images.add(p.id, ups)}
    cv.training.train(p.id)
    cv.deps.runner.run_all()
    s = cv.labelling.suggest(p.id)
    assert {x.image.id for x in s} == {ids["u-red"], ids["u-purple"]}
    assert s[0].image.id == ids["u-purple"]  # the doubtful one first
    assert all(0 <= t.probability <= 1 for x in s for t in x.predictions)
    audit = cv.labelling.audit(p.id)
    assert audit[0].image.id == ids["wrong"] and audit[0].tag_names == ["red"]
    assert "blue" in audit[0].suggested_names and audit[0].score > 0.5
