"""The use cases on a real SQLite database, real blobs and the real EfficientNet-Lite0 backbone."""
import threading

import pytest

from core import errors
from core.model import IterationStatus, TagType
from core.usecases import ImageUpload, Scope, UseCases, recover
from tests.conftest import make_cv
from tests.helpers import colour_images, png_bytes

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (30, 40, 220)


def _project_with_images(cv, n=8, extra=None):
    p = cv.projects.create("colours")
    red, green = cv.tags.create(p.id, "red"), cv.tags.create(p.id, "green")
    ups = [ImageUpload(d, f"r{i}.png", [red.id]) for i, d in enumerate(colour_images(n, RED, 1))]
    ups += [ImageUpload(d, f"g{i}.png", [green.id]) for i, d in enumerate(colour_images(n, GREEN, 2))]
    res = cv.images.add(p.id, ups)
    assert all(r.status == "OK" for r in res)
    return p, red, green


def _blob_count(cv):
    return len(list(cv.deps.blobs.keys()))


def _trained(cv, project_id, force=False, timeout=120):
    return cv.training.wait(project_id, cv.training.train(project_id, force).id, timeout)


def test_duplicates_are_reported_and_stored_once(cv):
    p = cv.projects.create("dups")
    data = png_bytes((1, 2, 3))
    first = cv.images.add(p.id, [ImageUpload(data, "a.png"), ImageUpload(data, "a-again.png")])
    assert [r.status for r in first] == ["OK", "OKDuplicate"]
    again = cv.images.add(p.id, [ImageUpload(data, "b.png")])
    assert again[0].status == "OKDuplicate" and again[0].image.id == first[0].image.id
    assert cv.images.count(p.id) == 1
    assert _blob_count(cv) == 1


def test_batch_with_bad_images_keeps_the_good_ones(cv):
    p = cv.projects.create("mixed")
    ups = [ImageUpload(png_bytes((9, 9, 9)), "good.png"), ImageUpload(b"GIF89a garbage", "bad.gif"),
           ImageUpload(png_bytes(size=(3000, 100)), "thin.png"), ImageUpload(b"x" * 10, "big.png")]
    res = cv.images.add(p.id, ups, max_bytes=len(ups[0].data) + 10)
    assert [r.status for r in res] == ["OK", "ErrorImageFormat", "ErrorImageSize", "ErrorImageFormat"]
    assert "limit" in res[2].message
    assert cv.images.count(p.id) == 1 and _blob_count(cv) == 1


def test_failed_commit_leaves_no_rows_and_no_orphan_blobs(tmp_path, provider, monkeypatch):
    cv = make_cv(tmp_path, provider)
    p = cv.projects.create("crash")
    from storage.repositories import SqlImages

    calls = {"n": 0}
    real_add = SqlImages.add

    def flaky_add(self, image):
        calls["n"] += 1
        if calls["n"] >= 3:  # the disk stays full: both attempts fail part-way
            raise RuntimeError("disk full")
        return real_add(self, image)

    monkeypatch.setattr(SqlImages, "add", flaky_add)
    with pytest.raises(RuntimeError):
        cv.images.add(p.id, [ImageUpload(d) for d in colour_images(4, RED, 5)])
    monkeypatch.setattr(SqlImages, "add", real_add)
    assert cv.images.count(p.id) == 0
    assert _blob_count(cv) == 0


def test_negative_tag_cannot_join_a_regular_tag(cv):
    p = cv.projects.create("neg")
    neg = cv.tags.create(p.id, "Negative", TagType.Negative)
    cat = cv.tags.create(p.id, "cat")
    res = cv.images.add(p.id, [ImageUpload(png_bytes(), "x.png", [neg.id, cat.id])])
    assert res[0].status == "ErrorNegativeAndRegularTagOnSameImage"
    ok = cv.images.add(p.id, [ImageUpload(png_bytes(), "x.png", [neg.id])])[0]
    with pytest.raises(errors.NegativeAndRegularTag):
        cv.images.add_tags(p.id, [ok.image.id], [cat.id])
    with pytest.raises(errors.InvalidInput):
        cv.tags.create(p.id, "another negative", TagType.Negative)


def test_tag_names_are_case_insensitive_unique(cv):
    p = cv.projects.create("case")
    cv.tags.create(p.id, "Cat")
    with pytest.raises(errors.Conflict):
        cv.tags.create(p.id, "cAT")
    assert [t.name for t in cv.tags.get_or_create(p.id, ["CAT", "dog", "negative"])] == ["Cat", "dog", "Negative"]


def test_project_names_unique_and_validation_changes_nothing(cv):
    cv.projects.create("One")
    with pytest.raises(errors.Conflict):
        cv.projects.create("one")
    with pytest.raises(errors.InvalidInput):
        cv.projects.create("x", domain="Cars")
    with pytest.raises(errors.InvalidInput):
        cv.projects.update(cv.projects.find("One").id, threshold=1.5)
    assert [p.name for p in cv.projects.list()] == ["One"]
    assert cv.projects.find("one").threshold == 0.5


def test_train_predict_and_recompute_threshold(cv):
    p, red, green = _project_with_images(cv)
    it = cv.training.train(p.id)
    assert it.status == IterationStatus.Queued
    it = cv.training.wait(p.id, it.id, timeout=120)
    assert it.status == IterationStatus.Completed, it.failure_reason
    assert cv.projects.get(p.id).default_iteration_id == it.id
    assert it.backbone_id.startswith("efficientnet-lite0@")
    perf = cv.iterations.performance(p.id, it.id)
    assert perf["accuracy"] >= 0.9
    assert {t["name"] for t in perf["perTagPerformance"]} == {"red", "green"}
    for key in ("precision", "recall", "averagePrecision", "precisionStdDeviation", "recallStdDeviation"):
        assert 0.0 <= perf[key] <= 1.0
    assert any("30+" in w for w in perf["warnings"])
    # any threshold, instantly, from the stored out-of-fold probabilities
    low, high = cv.iterations.performance(p.id, it.id, 0.05), cv.iterations.performance(p.id, it.id, 0.999)
    assert low["recall"] >= high["recall"]
    assert high["threshold"] == 0.999
    pred = cv.predictions.predict(p.id, colour_images(1, RED, 99)[0])
    assert pred.predictions[0].tag_name == "red" and pred.predictions[0].probability > 0.5
    assert abs(sum(x.probability for x in pred.predictions) - 1) < 1e-4
    assert pred.stored and cv.predictions.list(p.id)[0].id == pred.id
    nostore = cv.predictions.predict(p.id, colour_images(1, GREEN, 98)[0], store=False)
    assert nostore.predictions[0].tag_name == "green" and len(cv.predictions.list(p.id)) == 1


def test_training_rules_nothing_changed_and_concurrency(cv):
    p, red, green = _project_with_images(cv, n=6)
    first = _trained(cv, p.id)
    with pytest.raises(errors.TrainingNotNeeded):
        cv.training.train(p.id)
    forced = _trained(cv, p.id, force=True)
    assert forced.number == first.number + 1 and forced.status == IterationStatus.Completed
    assert cv.projects.get(p.id).default_iteration_id == first.id  # the first stays default

    gate = threading.Event()

    class HeldRunner:
        def submit(self, job, fn):
            threading.Thread(target=lambda: (gate.wait(30), fn()), daemon=True).start()

    cv.deps.runner = HeldRunner()
    cv.images.add(p.id, [ImageUpload(colour_images(1, RED, 50)[0], "new.png", [red.id])])
    queued = cv.training.train(p.id)
    with pytest.raises(errors.TrainingInProgress):
        cv.training.train(p.id, force=True)
    gate.set()
    assert cv.training.wait(p.id, queued.id, timeout=120).status == IterationStatus.Completed


def test_retraining_embeds_only_new_images(cv):
    p, red, green = _project_with_images(cv, n=6)
    before = cv.deps.stats.images
    _trained(cv, p.id)
    assert cv.deps.stats.images - before == 12
    cv.images.add(p.id, [ImageUpload(d, "", [green.id]) for d in colour_images(2, GREEN, 77)])
    cv.projects.update(p.id, threshold=0.6)
    _trained(cv, p.id)
    assert cv.deps.stats.images - before == 14


def test_training_validation_message_lists_tags(cv):
    p = cv.projects.create("few")
    a, b = cv.tags.create(p.id, "a"), cv.tags.create(p.id, "b")
    cv.images.add(p.id, [ImageUpload(d, "", [a.id]) for d in colour_images(6, RED, 3)] +
                  [ImageUpload(d, "", [b.id]) for d in colour_images(2, GREEN, 4)])
    with pytest.raises(errors.TrainingValidationFailed) as e:
        cv.training.train(p.id)
    assert "'b' has 2 images" in e.value.message
    assert cv.iterations.list(p.id) == []


def test_iteration_default_and_delete_rules_and_blob_cleanup(cv):
    p, red, green = _project_with_images(cv, n=6)
    blobs = cv.deps.blobs
    one = _trained(cv, p.id)
    cv.images.add(p.id, [ImageUpload(colour_images(1, RED, 31)[0], "", [red.id])])
    two = _trained(cv, p.id)
    assert {one.probe_key, one.evaluation_key}.isdisjoint({two.probe_key, two.evaluation_key})
    with pytest.raises(errors.CannotDeleteDefault):
        cv.iterations.delete(p.id, one.id)
    cv.iterations.set_default(p.id, two.id)
    assert cv.predictions.predict(p.id, colour_images(1, GREEN, 5)[0], store=False).iteration_id == two.id
    cv.iterations.publish(p.id, one.id, "prod")
    own = UseCases(cv.deps, Scope.of(p.workspace))
    assert own.predictions.predict(p.id, colour_images(1, GREEN, 5)[0], store=False,
                                   publish_name="prod").iteration_id == one.id
    other = UseCases(cv.deps, Scope.of("T-OTHER"))
    with pytest.raises(errors.NotFound):  # a project of another workspace does not exist for its keys
        other.predictions.predict(p.id, colour_images(1, GREEN, 5)[0], publish_name="prod")
    cv.iterations.unpublish(p.id, one.id)
    with pytest.raises(errors.NotFound, match="published as 'prod'"):
        cv.predictions.predict(p.id, colour_images(1, GREEN, 5)[0], publish_name="prod")
    assert blobs.exists(one.probe_key) and blobs.exists(one.evaluation_key)
    cv.iterations.delete(p.id, one.id)
    assert not blobs.exists(one.probe_key) and not blobs.exists(one.evaluation_key)
    assert blobs.exists(two.probe_key)
    assert [i.number for i in cv.iterations.list(p.id)] == [2]
    # images stay while the project has them
    assert all(blobs.exists(i.sha256) for i in cv.images.list(p.id))


def test_deleted_images_stay_while_an_iteration_uses_them(cv):
    p, red, green = _project_with_images(cv, n=6)
    it = _trained(cv, p.id)
    img = cv.images.list(p.id)[0]
    cv.images.delete(p.id, [img.id])
    assert cv.deps.blobs.exists(img.sha256)
    cv.training.train(p.id)  # iteration 2 without that image
    it2 = cv.training.wait(p.id, cv.iterations.list(p.id)[-1].id, timeout=120)
    cv.iterations.set_default(p.id, it2.id)
    cv.iterations.delete(p.id, it.id)
    assert not cv.deps.blobs.exists(img.sha256)


def test_restart_fails_interrupted_training_and_deletes_orphans(tmp_path, provider):
    class NeverRuns:
        def submit(self, job, fn):
            pass

    cv = make_cv(tmp_path, provider, runner=NeverRuns())
    p, red, green = _project_with_images(cv, n=5)
    it = cv.training.train(p.id)
    orphan = cv.deps.blobs.put(b"half-written upload")
    from core.model import Export

    with cv.deps.uow() as uow:  # an export cut off by the crash
        uow.exports.add(Export(iteration_id=it.id, platform="ONNX"))
        uow.commit()
    # "restart": new use cases over the same database and blobs
    again = make_cv(tmp_path, provider)
    report = recover(again.deps)
    assert report == {"failed_iterations": 1, "orphan_blobs_deleted": 1, "stale_partial_files_deleted": 0,
                      "missing_files": 0}
    failed = again.iterations.get(p.id, it.id)
    assert failed.status == IterationStatus.Failed and "interrupted" in failed.failure_reason
    assert again.projects.get(p.id).default_iteration_id is None
    assert [e.status for e in again.exports.list(p.id, it.id)] == ["Failed"]
    assert not again.deps.blobs.exists(orphan)
    assert again.images.count(p.id) == 10 and all(again.deps.blobs.exists(i.sha256) for i in again.images.list(p.id))
    assert _trained(again, p.id).status == IterationStatus.Completed


def test_multilabel_training_with_negative_images(cv):
    p = cv.projects.create("ml", classification_type="Multilabel")
    red, blue = cv.tags.create(p.id, "red"), cv.tags.create(p.id, "blue")
    neg = cv.tags.create(p.id, "Negative", TagType.Negative)
    ups = [ImageUpload(d, "", [red.id]) for d in colour_images(6, RED, 11)]
    ups += [ImageUpload(d, "", [blue.id]) for d in colour_images(6, BLUE, 12)]
    ups += [ImageUpload(d, "", [red.id, blue.id]) for d in colour_images(6, (200, 30, 200), 13)]
    ups += [ImageUpload(d, "", [neg.id]) for d in colour_images(6, GREEN, 14)]
    cv.images.add(p.id, ups)
    it = _trained(cv, p.id)
    assert it.status == IterationStatus.Completed, it.failure_reason
    perf = cv.iterations.performance(p.id, it.id)
    assert "confusionMatrix" not in perf
    assert {t["name"] for t in perf["perTagPerformance"]} == {"red", "blue", "Negative"}
    pred = cv.predictions.predict(p.id, colour_images(1, RED, 90)[0], store=False)
    assert pred.predictions[0].tag_name == "red"


def test_delete_project_removes_its_blobs(cv):
    p, _, _ = _project_with_images(cv, n=5)
    _trained(cv, p.id)
    assert _blob_count(cv) > 0
    cv.projects.delete(p.id)
    assert _blob_count(cv) == 0 and cv.projects.list() == []


def test_prediction_added_to_training_set(cv):
    p, red, green = _project_with_images(cv, n=5)
    _trained(cv, p.id)
    pred = cv.predictions.predict(p.id, colour_images(1, RED, 123)[0])
    res = cv.predictions.add_to_training(p.id, pred.id, [red.id])
    assert res.status == "OK" and res.image.tag_ids == [red.id]
    assert cv.images.count(p.id, tag_ids=[red.id]) == 6


def test_prediction_without_iteration_is_a_clear_error(cv):
    p = cv.projects.create("untrained")
    with pytest.raises(errors.NoDefaultIteration, match="train it first"):
        cv.predictions.predict(p.id, png_bytes())
    with pytest.raises(errors.ImageRejected):
        cv.predictions.predict(p.id, b"nope")
