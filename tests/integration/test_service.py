"""The service layer on a real SQLite database, real blobs and the real EfficientNet-Lite0 backbone."""
import threading

import numpy as np
import pytest

from core import errors
from core.model import IterationStatus, TagType
from core.service import ImageUpload
from tests.conftest import make_service
from tests.helpers import colour_images, png_bytes

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (30, 40, 220)


def _project_with_images(service, n=8, extra=None):
    p = service.create_project("colours")
    red, green = service.create_tag(p.id, "red"), service.create_tag(p.id, "green")
    ups = [ImageUpload(d, f"r{i}.png", [red.id]) for i, d in enumerate(colour_images(n, RED, 1))]
    ups += [ImageUpload(d, f"g{i}.png", [green.id]) for i, d in enumerate(colour_images(n, GREEN, 2))]
    res = service.add_images(p.id, ups)
    assert all(r.status == "OK" for r in res)
    return p, red, green


def _blob_count(service):
    return len(list(service.blobs.keys()))


def test_duplicates_are_reported_and_stored_once(service):
    p = service.create_project("dups")
    data = png_bytes((1, 2, 3))
    first = service.add_images(p.id, [ImageUpload(data, "a.png"), ImageUpload(data, "a-again.png")])
    assert [r.status for r in first] == ["OK", "OKDuplicate"]
    again = service.add_images(p.id, [ImageUpload(data, "b.png")])
    assert again[0].status == "OKDuplicate" and again[0].image.id == first[0].image.id
    assert service.count_images(p.id) == 1
    assert _blob_count(service) == 1


def test_batch_with_bad_images_keeps_the_good_ones(service):
    p = service.create_project("mixed")
    ups = [ImageUpload(png_bytes((9, 9, 9)), "good.png"), ImageUpload(b"GIF89a garbage", "bad.gif"),
           ImageUpload(png_bytes(size=(3000, 100)), "thin.png"), ImageUpload(b"x" * 10, "big.png")]
    res = service.add_images(p.id, ups, max_bytes=len(ups[0].data) + 10)
    assert [r.status for r in res] == ["OK", "ErrorImageFormat", "ErrorImageSize", "ErrorImageFormat"]
    assert "limit" in res[2].message
    assert service.count_images(p.id) == 1 and _blob_count(service) == 1


def test_failed_commit_leaves_no_rows_and_no_orphan_blobs(tmp_path, provider, monkeypatch):
    service = make_service(tmp_path, provider)
    p = service.create_project("crash")
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
        service.add_images(p.id, [ImageUpload(d) for d in colour_images(4, RED, 5)])
    monkeypatch.setattr(SqlImages, "add", real_add)
    assert service.count_images(p.id) == 0
    assert _blob_count(service) == 0


def test_negative_tag_cannot_join_a_regular_tag(service):
    p = service.create_project("neg")
    neg = service.create_tag(p.id, "Negative", TagType.Negative)
    cat = service.create_tag(p.id, "cat")
    res = service.add_images(p.id, [ImageUpload(png_bytes(), "x.png", [neg.id, cat.id])])
    assert res[0].status == "ErrorNegativeAndRegularTagOnSameImage"
    ok = service.add_images(p.id, [ImageUpload(png_bytes(), "x.png", [neg.id])])[0]
    with pytest.raises(errors.NegativeAndRegularTag):
        service.add_image_tags(p.id, [ok.image.id], [cat.id])
    with pytest.raises(errors.InvalidInput):
        service.create_tag(p.id, "another negative", TagType.Negative)


def test_tag_names_are_case_insensitive_unique(service):
    p = service.create_project("case")
    service.create_tag(p.id, "Cat")
    with pytest.raises(errors.Conflict):
        service.create_tag(p.id, "cAT")
    assert [t.name for t in service.get_or_create_tags(p.id, ["CAT", "dog", "negative"])] == ["Cat", "dog", "Negative"]


def test_project_names_unique_and_validation_changes_nothing(service):
    service.create_project("One")
    with pytest.raises(errors.Conflict):
        service.create_project("one")
    with pytest.raises(errors.InvalidInput):
        service.create_project("x", domain="Cars")
    with pytest.raises(errors.InvalidInput):
        service.update_project(service.find_project("One").id, threshold=1.5)
    assert [p.name for p in service.list_projects()] == ["One"]
    assert service.find_project("one").threshold == 0.5


def test_train_predict_and_recompute_threshold(service):
    p, red, green = _project_with_images(service)
    it = service.train(p.id)
    assert it.status == IterationStatus.Queued
    it = service.wait_for_training(it.id, timeout=120)
    assert it.status == IterationStatus.Completed, it.failure_reason
    assert service.get_project(p.id).default_iteration_id == it.id
    assert it.backbone_id.startswith("efficientnet-lite0@")
    perf = service.iteration_performance(it.id)
    assert perf["accuracy"] >= 0.9
    assert {t["name"] for t in perf["perTagPerformance"]} == {"red", "green"}
    for key in ("precision", "recall", "averagePrecision", "precisionStdDeviation", "recallStdDeviation"):
        assert 0.0 <= perf[key] <= 1.0
    assert any("30+" in w for w in perf["warnings"])
    # any threshold, instantly, from the stored out-of-fold probabilities
    low, high = service.iteration_performance(it.id, 0.05), service.iteration_performance(it.id, 0.999)
    assert low["recall"] >= high["recall"]
    assert high["threshold"] == 0.999
    pred = service.predict(p.id, colour_images(1, RED, 99)[0])
    assert pred.predictions[0].tag_name == "red" and pred.predictions[0].probability > 0.5
    assert abs(sum(x.probability for x in pred.predictions) - 1) < 1e-4
    assert pred.stored and service.list_predictions(p.id)[0].id == pred.id
    nostore = service.predict(p.id, colour_images(1, GREEN, 98)[0], store=False)
    assert nostore.predictions[0].tag_name == "green" and len(service.list_predictions(p.id)) == 1


def test_training_rules_nothing_changed_and_concurrency(service):
    p, red, green = _project_with_images(service, n=6)
    first = service.wait_for_training(service.train(p.id).id, timeout=120)
    with pytest.raises(errors.TrainingNotNeeded):
        service.train(p.id)
    forced = service.wait_for_training(service.train(p.id, force=True).id, timeout=120)
    assert forced.number == first.number + 1 and forced.status == IterationStatus.Completed
    assert service.get_project(p.id).default_iteration_id == first.id  # the first stays default

    gate = threading.Event()

    class HeldRunner:
        def submit(self, job_id, fn):
            threading.Thread(target=lambda: (gate.wait(30), fn()), daemon=True).start()

    service.runner = HeldRunner()
    service.add_images(p.id, [ImageUpload(colour_images(1, RED, 50)[0], "new.png", [red.id])])
    queued = service.train(p.id)
    with pytest.raises(errors.TrainingInProgress):
        service.train(p.id, force=True)
    gate.set()
    assert service.wait_for_training(queued.id, timeout=120).status == IterationStatus.Completed


def test_retraining_embeds_only_new_images(service):
    p, red, green = _project_with_images(service, n=6)
    before = service.images_embedded
    service.wait_for_training(service.train(p.id).id, timeout=120)
    assert service.images_embedded - before == 12
    service.add_images(p.id, [ImageUpload(d, "", [green.id]) for d in colour_images(2, GREEN, 77)])
    service.update_project(p.id, threshold=0.6)
    service.wait_for_training(service.train(p.id).id, timeout=120)
    assert service.images_embedded - before == 14


def test_training_validation_message_lists_tags(service):
    p = service.create_project("few")
    a, b = service.create_tag(p.id, "a"), service.create_tag(p.id, "b")
    service.add_images(p.id, [ImageUpload(d, "", [a.id]) for d in colour_images(6, RED, 3)] +
                       [ImageUpload(d, "", [b.id]) for d in colour_images(2, GREEN, 4)])
    with pytest.raises(errors.TrainingValidationFailed) as e:
        service.train(p.id)
    assert "'b' has 2 images" in e.value.message
    assert service.list_iterations(p.id) == []


def test_iteration_default_and_delete_rules_and_blob_cleanup(service):
    p, red, green = _project_with_images(service, n=6)
    one = service.wait_for_training(service.train(p.id).id, timeout=120)
    service.add_images(p.id, [ImageUpload(colour_images(1, RED, 31)[0], "", [red.id])])
    two = service.wait_for_training(service.train(p.id).id, timeout=120)
    assert {one.probe_key, one.evaluation_key}.isdisjoint({two.probe_key, two.evaluation_key})
    with pytest.raises(errors.CannotDeleteDefault):
        service.delete_iteration(p.id, one.id)
    service.set_default_iteration(p.id, two.id)
    assert service.predict(p.id, colour_images(1, GREEN, 5)[0], store=False).iteration_id == two.id
    service.publish_iteration(p.id, one.id, "prod")
    assert service.predict(p.id, colour_images(1, GREEN, 5)[0], store=False, publish_name="prod",
                           workspace=p.workspace).iteration_id == one.id
    with pytest.raises(errors.NotFound):  # a project of another workspace does not exist for its keys
        service.predict(p.id, colour_images(1, GREEN, 5)[0], publish_name="prod", workspace="T-OTHER")
    service.unpublish_iteration(p.id, one.id)
    with pytest.raises(errors.NotFound, match="published as 'prod'"):
        service.predict(p.id, colour_images(1, GREEN, 5)[0], publish_name="prod")
    assert service.blobs.exists(one.probe_key) and service.blobs.exists(one.evaluation_key)
    service.delete_iteration(p.id, one.id)
    assert not service.blobs.exists(one.probe_key) and not service.blobs.exists(one.evaluation_key)
    assert service.blobs.exists(two.probe_key)
    assert [i.number for i in service.list_iterations(p.id)] == [2]
    # images stay while the project has them
    assert all(service.blobs.exists(i.sha256) for i in service.list_images(p.id))


def test_deleted_images_stay_while_an_iteration_uses_them(service):
    p, red, green = _project_with_images(service, n=6)
    it = service.wait_for_training(service.train(p.id).id, timeout=120)
    img = service.list_images(p.id)[0]
    service.delete_images(p.id, [img.id])
    assert service.blobs.exists(img.sha256)
    service.train(p.id)  # iteration 2 without that image
    it2 = service.wait_for_training(service.list_iterations(p.id)[-1].id, timeout=120)
    service.set_default_iteration(p.id, it2.id)
    service.delete_iteration(p.id, it.id)
    assert not service.blobs.exists(img.sha256)


def test_restart_fails_interrupted_training_and_deletes_orphans(tmp_path, provider):
    service = make_service(tmp_path, provider)

    class NeverRuns:
        def submit(self, job_id, fn):
            pass

    service.runner = NeverRuns()
    p, red, green = _project_with_images(service, n=5)
    it = service.train(p.id)
    orphan = service.blobs.put(b"half-written upload")
    from core.model import Export

    with service.uow() as uow:  # an export cut off by the crash
        uow.exports.add(Export(iteration_id=it.id, platform="ONNX"))
        uow.commit()
    # "restart": a new service over the same database and blobs
    again = make_service(tmp_path, provider)
    report = again.recover()
    assert report == {"failed_iterations": 1, "orphan_blobs_deleted": 1}
    failed = again.get_iteration(it.id)
    assert failed.status == IterationStatus.Failed and "interrupted" in failed.failure_reason
    assert again.get_project(p.id).default_iteration_id is None
    assert [e.status for e in again.list_exports(p.id, it.id)] == ["Failed"]
    assert not again.blobs.exists(orphan)
    assert again.count_images(p.id) == 10 and all(again.blobs.exists(i.sha256) for i in again.list_images(p.id))
    assert again.wait_for_training(again.train(p.id).id, timeout=120).status == IterationStatus.Completed


def test_multilabel_training_with_negative_images(service):
    p = service.create_project("ml", classification_type="Multilabel")
    red, blue = service.create_tag(p.id, "red"), service.create_tag(p.id, "blue")
    neg = service.create_tag(p.id, "Negative", TagType.Negative)
    ups = [ImageUpload(d, "", [red.id]) for d in colour_images(6, RED, 11)]
    ups += [ImageUpload(d, "", [blue.id]) for d in colour_images(6, BLUE, 12)]
    ups += [ImageUpload(d, "", [red.id, blue.id]) for d in colour_images(6, (200, 30, 200), 13)]
    ups += [ImageUpload(d, "", [neg.id]) for d in colour_images(6, GREEN, 14)]
    service.add_images(p.id, ups)
    it = service.wait_for_training(service.train(p.id).id, timeout=120)
    assert it.status == IterationStatus.Completed, it.failure_reason
    perf = service.iteration_performance(it.id)
    assert "confusionMatrix" not in perf
    assert {t["name"] for t in perf["perTagPerformance"]} == {"red", "blue", "Negative"}
    pred = service.predict(p.id, colour_images(1, RED, 90)[0], store=False)
    assert pred.predictions[0].tag_name == "red"


def test_delete_project_removes_its_blobs(service):
    p, _, _ = _project_with_images(service, n=5)
    service.wait_for_training(service.train(p.id).id, timeout=120)
    assert _blob_count(service) > 0
    service.delete_project(p.id)
    assert _blob_count(service) == 0 and service.list_projects() == []


def test_prediction_added_to_training_set(service):
    p, red, green = _project_with_images(service, n=5)
    service.wait_for_training(service.train(p.id).id, timeout=120)
    pred = service.predict(p.id, colour_images(1, RED, 123)[0])
    res = service.add_prediction_to_training(p.id, pred.id, [red.id])
    assert res.status == "OK" and res.image.tag_ids == [red.id]
    assert service.count_images(p.id, tag_ids=[red.id]) == 6


def test_prediction_without_iteration_is_a_clear_error(service):
    p = service.create_project("untrained")
    with pytest.raises(errors.NoDefaultIteration, match="train it first"):
        service.predict(p.id, png_bytes())
    with pytest.raises(errors.ImageRejected):
        service.predict(p.id, b"nope")
