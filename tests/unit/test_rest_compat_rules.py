"""Custom Vision REST rules in core, on fakes (tests/fakes.py): image metadata (Azure's limits: 10 pairs per image,
keys up to 128 characters, values up to 256), images from stored predictions, a published project is not deleted,
the publish resource id is kept as sent."""
import pytest

from core import errors
from core.model import Iteration, IterationStatus, Prediction, TagPrediction
from core.usecases import ImageUpload
from tests.helpers import png_bytes


@pytest.fixture
def p(cv):
    return cv.projects.create("rest")


def _images(cv, p, n=2):
    results = cv.images.add(p.id, [ImageUpload(png_bytes(seed=k)) for k in range(n)])
    return [r.image.id for r in results]


def _iteration(cv, p, publish_name=None) -> Iteration:
    it = Iteration(project_id=p.id, number=1, name="Iteration 1", domain=p.domain,
                   classification_type=p.classification_type, backbone_id="fake", status=IterationStatus.Completed,
                   publish_name=publish_name, probe_key=cv.deps.blobs.put(b"probe"))
    with cv.deps.uow() as uow:
        uow.iterations.add(it)
        uow.commit()
    return it


def _metadata(cv, p, ids):
    return {i.id: i.metadata for i in cv.images.get_many(p.id, ids)}


# --------------------------------------------------------------------------- metadata
def test_metadata_is_merged_per_image_and_returned(cv, p):
    a, b = _images(cv, p)
    results = cv.images.update_metadata(p.id, [a, b], {"camera": "north", "shift": "night"})
    assert [(r.image_id, r.status) for r in results] == [(a, "OK"), (b, "OK")]
    cv.images.update_metadata(p.id, [a], {"shift": "day", "lens": "wide"})
    assert _metadata(cv, p, [a, b]) == {a: {"camera": "north", "shift": "day", "lens": "wide"},
                                        b: {"camera": "north", "shift": "night"}}


def test_images_carry_metadata_from_upload(cv, p):
    [r] = cv.images.add(p.id, [ImageUpload(png_bytes(seed=9), metadata={"source": "line 3"})])
    assert _metadata(cv, p, [r.image.id]) == {r.image.id: {"source": "line 3"}}


def test_more_than_ten_pairs_fail_that_image_only(cv, p):
    a, b = _images(cv, p)
    cv.images.update_metadata(p.id, [a], {f"k{n}": "v" for n in range(8)})
    results = cv.images.update_metadata(p.id, [a, b], {"x": "1", "y": "2", "z": "3"})
    assert [(r.image_id, r.status) for r in results] == [(a, "ErrorLimitExceed"), (b, "OK")]
    assert len(_metadata(cv, p, [a])[a]) == 8 and "x" not in _metadata(cv, p, [a])[a]
    assert _metadata(cv, p, [b])[b] == {"x": "1", "y": "2", "z": "3"}


def test_unknown_and_foreign_images_are_not_found_per_image(cv, p):
    [a] = _images(cv, p, 1)
    other = cv.projects.create("other")
    [foreign] = _images(cv, other, 1)
    results = cv.images.update_metadata(p.id, [a, foreign], {"k": "v"})
    assert [r.status for r in results] == ["OK", "ErrorImageNotFound"]
    assert _metadata(cv, other, [foreign]) == {foreign: {}}


@pytest.mark.parametrize("metadata, code", [
    ({"k" * 129: "v"}, "BadRequestImageMetadataKey"),
    ({"": "v"}, "BadRequestImageMetadataKey"),
    ({"k": "v" * 257}, "BadRequestImageMetadataValue"),
    ({"k": 3}, "BadRequestImageMetadataValue"),
    ({f"k{n}": "v" for n in range(11)}, "BadRequestImageMetadataKey"),
    (["k", "v"], "BadRequestImageMetadataKey"),
])
def test_bad_metadata_refuses_the_batch_and_changes_nothing(cv, p, metadata, code):
    a, b = _images(cv, p)
    cv.images.update_metadata(p.id, [a], {"keep": "me"})
    with pytest.raises(errors.InvalidInput) as e:
        cv.images.update_metadata(p.id, [a, b], metadata)
    assert e.value.code == code
    assert _metadata(cv, p, [a, b]) == {a: {"keep": "me"}, b: {}}


def test_limits_at_the_edge_are_accepted(cv, p):
    [a] = _images(cv, p, 1)
    edge = {"k" * 128: "v" * 256} | {f"k{n}": "" for n in range(9)}
    assert cv.images.update_metadata(p.id, [a], edge)[0].status == "OK"
    assert _metadata(cv, p, [a])[a] == edge


def test_metadata_batch_size_and_roles(cv, p):
    with pytest.raises(errors.InvalidInput) as e:
        cv.images.update_metadata(p.id, [f"00000000-0000-0000-0000-{n:012d}" for n in range(65)], {"k": "v"})
    assert e.value.code == "BadRequestExceededBatchSize"
    with pytest.raises(errors.NotFound):
        cv.images.update_metadata("00000000-0000-0000-0000-000000000000", ["x"], {"k": "v"})


# --------------------------------------------------------------------------- images from predictions
def _prediction(cv, p, stored=True) -> Prediction:
    pred = Prediction(p.id, "iteration", [TagPrediction("a", "a", 0.9)], 0.5,
                      sha256=cv.deps.blobs.put(png_bytes(seed=77)) if stored else None, stored=stored)
    with cv.deps.uow() as uow:
        uow.predictions.add(pred)
        uow.commit()
    return pred


def test_stored_predictions_join_the_training_set_with_tags(cv, p):
    tag = cv.tags.create(p.id, "cat")
    pred, unstored = _prediction(cv, p), _prediction(cv, p, stored=False)
    missing = "00000000-0000-0000-0000-000000000001"
    results = cv.predictions.add_many_to_training(p.id, [(pred.id, [tag.id]), (unstored.id, [tag.id]),
                                                         (missing, [])], {"from": "field"})
    assert [r.status for r in results] == ["OK", "ErrorSource", "ErrorSource"]
    assert "no stored prediction" in results[2].message
    [image] = cv.images.list(p.id)
    assert image.tag_ids == [tag.id] and image.sha256 == pred.sha256 and image.metadata == {"from": "field"}
    assert cv.images.data(p.id, image.id) == cv.predictions.image_data(p.id, pred.id)
    with pytest.raises(errors.NotFound):
        cv.predictions.image_data(p.id, unstored.id)


def test_a_prediction_of_another_project_is_not_added(cv, p):
    other = cv.projects.create("other")
    pred = _prediction(cv, other)
    assert [r.status for r in cv.predictions.add_many_to_training(p.id, [(pred.id, [])])] == ["ErrorSource"]
    assert cv.images.list(p.id) == []
    with pytest.raises(errors.NotFound):
        cv.predictions.image_data(p.id, pred.id)


# --------------------------------------------------------------------------- publishing and deleting projects
def test_a_project_with_a_published_iteration_is_not_deleted(cv, p):
    it = _iteration(cv, p)
    cv.iterations.publish(p.id, it.id, "prod")
    with pytest.raises(errors.CvError) as e:
        cv.projects.delete(p.id)
    assert e.value.code == "BadRequestIterationIsPublished" and "prod" in e.value.message
    assert cv.projects.get(p.id).id == p.id and cv.deps.blobs.exists(it.probe_key)
    cv.iterations.unpublish(p.id, it.id)
    cv.projects.delete(p.id)
    with pytest.raises(errors.NotFound):
        cv.projects.get(p.id)


def test_the_publish_resource_id_is_kept_as_sent_and_cleared_on_unpublish(cv, p):
    it = _iteration(cv, p)
    resource = "/subscriptions/abc/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/pred"
    assert cv.iterations.publish(p.id, it.id, "prod", resource_id=resource).publish_resource_id == resource
    assert cv.iterations.get(p.id, it.id).publish_resource_id == resource
    assert cv.iterations.unpublish(p.id, it.id).publish_resource_id is None
    assert cv.iterations.get(p.id, it.id).publish_resource_id is None
