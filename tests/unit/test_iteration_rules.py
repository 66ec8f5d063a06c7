"""The rules of training, iterations and stored predictions, on fakes (tests/fakes.py): no database, no model.
Completed iterations are written straight through the fake unit of work instead of being trained."""
from datetime import UTC, datetime, timedelta

import pytest

from core import errors
from core.model import Iteration, IterationStatus, Prediction, TagPrediction
from core.usecases import ImageUpload
from core.usecases.prediction import PredictionQuery
from tests.helpers import png_bytes


@pytest.fixture
def p(cv):
    return cv.projects.create("iterations")


def _iteration(cv, p, number, status=IterationStatus.Completed, publish_name=None, default=False) -> Iteration:
    it = Iteration(project_id=p.id, number=number, name=f"Iteration {number}", domain=p.domain,
                   classification_type=p.classification_type, backbone_id="fake-mean-colour", status=status,
                   publish_name=publish_name, probe_key=cv.deps.blobs.put(f"probe {number}".encode()))
    with cv.deps.uow() as uow:
        uow.iterations.add(it)
        if default:
            project = uow.projects.get(p.id)
            project.default_iteration_id = it.id
            uow.projects.update(project)
        uow.commit()
    return it


def _default(cv, p):
    return cv.projects.get(p.id).default_iteration_id


def test_a_published_iteration_is_not_deleted(cv, p):
    it = _iteration(cv, p, 1, publish_name="prod")
    with pytest.raises(errors.CvError) as e:
        cv.iterations.delete(p.id, it.id, release_default=True)
    assert e.value.code == "BadRequestIterationIsPublished"
    assert [i.id for i in cv.iterations.list(p.id)] == [it.id] and cv.deps.blobs.exists(it.probe_key)
    cv.iterations.unpublish(p.id, it.id)
    cv.iterations.delete(p.id, it.id)
    assert cv.iterations.list(p.id) == [] and not cv.deps.blobs.exists(it.probe_key)


@pytest.mark.parametrize("status", [IterationStatus.Queued, IterationStatus.Training])
def test_a_running_iteration_is_not_deleted(cv, p, status):
    it = _iteration(cv, p, 1, status=status)
    with pytest.raises(errors.TrainingInProgress):
        cv.iterations.delete(p.id, it.id)
    assert [i.id for i in cv.iterations.list(p.id)] == [it.id]


def test_the_default_iteration_is_deleted_only_with_release_default(cv, p):
    one = _iteration(cv, p, 1)
    two = _iteration(cv, p, 2)
    _iteration(cv, p, 3, status=IterationStatus.Failed)
    four = _iteration(cv, p, 4, default=True)
    with pytest.raises(errors.CannotDeleteDefault):
        cv.iterations.delete(p.id, four.id)
    assert _default(cv, p) == four.id and len(cv.iterations.list(p.id)) == 4
    cv.iterations.delete(p.id, four.id, release_default=True)  # to the newest other Completed: 2, not Failed 3
    assert _default(cv, p) == two.id
    cv.iterations.delete(p.id, two.id, release_default=True)
    assert _default(cv, p) == one.id
    cv.iterations.delete(p.id, one.id, release_default=True)  # none left to take it
    assert _default(cv, p) is None and [i.number for i in cv.iterations.list(p.id)] == [3]


def test_deleting_another_iteration_keeps_the_default(cv, p):
    one = _iteration(cv, p, 1, default=True)
    two = _iteration(cv, p, 2)
    cv.iterations.delete(p.id, two.id, release_default=True)
    assert _default(cv, p) == one.id


def test_publish_without_overwrite_refuses_a_taken_name(cv, p):
    one, two = _iteration(cv, p, 1), _iteration(cv, p, 2)
    cv.iterations.publish(p.id, one.id, "prod")
    with pytest.raises(errors.CvError) as e:
        cv.iterations.publish(p.id, two.id, "prod", overwrite=False)
    assert e.value.code == "BadRequestInvalidPublishName"
    assert [i.publish_name for i in cv.iterations.list(p.id)] == ["prod", None]
    assert cv.iterations.publish(p.id, one.id, "prod", overwrite=False).publish_name == "prod"  # its own name
    cv.iterations.publish(p.id, two.id, "prod")  # overwrite moves the name
    assert [i.publish_name for i in cv.iterations.list(p.id)] == [None, "prod"]


def test_only_a_completed_iteration_is_published_or_made_default(cv, p):
    failed = _iteration(cv, p, 1, status=IterationStatus.Failed)
    with pytest.raises(errors.IterationNotCompleted):
        cv.iterations.publish(p.id, failed.id, "prod")
    with pytest.raises(errors.IterationNotCompleted):
        cv.iterations.set_default(p.id, failed.id)
    assert cv.iterations.get(p.id, failed.id).publish_name is None and _default(cv, p) is None


def _trainable(cv, p):
    a, b = cv.tags.create(p.id, "a"), cv.tags.create(p.id, "b")
    ups = [ImageUpload(png_bytes(seed=i, size=(8, 8)), "", [a.id if i < 5 else b.id]) for i in range(10)]
    assert all(r.ok for r in cv.images.add(p.id, ups))
    return a, b


def _finish(cv, it):
    with cv.deps.uow() as uow:
        stored = uow.iterations.get(it.id)
        stored.status = IterationStatus.Completed
        uow.iterations.update(stored)
        uow.commit()


def test_training_is_refused_while_one_runs(cv, p):
    _trainable(cv, p)
    queued = cv.training.train(p.id)
    assert queued.status == IterationStatus.Queued and len(cv.deps.runner.jobs) == 1
    for force in (False, True):
        with pytest.raises(errors.TrainingInProgress):
            cv.training.train(p.id, force=force)
    with cv.deps.uow() as uow:  # still refused once the job has started
        it = uow.iterations.get(queued.id)
        it.status = IterationStatus.Training
        uow.iterations.update(it)
        uow.commit()
    with pytest.raises(errors.TrainingInProgress):
        cv.training.train(p.id)
    assert [i.number for i in cv.iterations.list(p.id)] == [1]


def test_training_is_refused_when_nothing_changed(cv, p):
    a, _ = _trainable(cv, p)
    _finish(cv, cv.training.train(p.id))
    with pytest.raises(errors.TrainingNotNeeded):
        cv.training.train(p.id)
    forced = cv.training.train(p.id, force=True)
    assert forced.number == 2
    _finish(cv, forced)
    cv.images.add(p.id, [ImageUpload(png_bytes(seed=99, size=(8, 8)), "", [a.id])])
    assert cv.training.train(p.id).number == 3


def test_a_failed_iteration_does_not_count_as_trained(cv, p):
    _trainable(cv, p)
    it = cv.training.train(p.id)
    with cv.deps.uow() as uow:
        stored = uow.iterations.get(it.id)
        stored.status = IterationStatus.Failed
        uow.iterations.update(stored)
        uow.commit()
    assert cv.training.train(p.id).number == 2


def test_the_training_job_completes_on_the_fake_backbone_and_sets_the_default(cv, p):
    _trainable(cv, p)
    it = cv.training.train(p.id)
    cv.deps.runner.run_all()
    done = cv.training.wait(p.id, it.id, timeout=5)
    assert done.status == IterationStatus.Completed, done.failure_reason
    assert done.backbone_id == "fake-mean-colour" and _default(cv, p) == it.id
    assert cv.deps.stats.images == 10


T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _stored_predictions(cv, p):
    """Six predictions, a minute apart, of two iterations; probability of tag 'a' 0.0, 0.2, …, 1.0."""
    one, two = _iteration(cv, p, 1), _iteration(cv, p, 2)
    preds = []
    with cv.deps.uow() as uow:
        for n in range(6):
            pa = n / 5
            pred = Prediction(p.id, (one if n < 3 else two).id,
                              [TagPrediction("a", "a", pa), TagPrediction("b", "b", 1 - pa)], 0.5,
                              created_at=T0 + timedelta(minutes=n))
            uow.predictions.add(pred)
            preds.append(pred)
        uow.commit()
    return one, two, preds


def _ids(page):
    return [pred.id for pred, _ in page.results]


def test_prediction_query_filters(cv, p):
    one, two, preds = _stored_predictions(cv, p)
    ids = [x.id for x in preds]
    assert _ids(cv.predictions.query(p.id, PredictionQuery())) == ids[::-1]
    assert _ids(cv.predictions.query(p.id, PredictionQuery(order="Oldest"))) == ids
    assert _ids(cv.predictions.query(p.id, PredictionQuery(iteration_id=two.id))) == ids[:2:-1]
    window = PredictionQuery(start=T0 + timedelta(minutes=1), end=T0 + timedelta(minutes=3), order="Oldest")
    assert _ids(cv.predictions.query(p.id, window)) == ids[1:4]
    ranged = PredictionQuery(tag_ranges=[("a", 0.3, 0.9)], order="Oldest")
    assert _ids(cv.predictions.query(p.id, ranged)) == ids[2:5]
    both = PredictionQuery(tag_ranges=[("a", 0.3, 1.0), ("b", 0.0, 0.65)], iteration_id=one.id)
    assert _ids(cv.predictions.query(p.id, both)) == [ids[2]]
    assert _ids(cv.predictions.query(p.id, PredictionQuery(tag_ranges=[("unknown", 0.0, 1.0)]))) == []
    suggested = _ids(cv.predictions.query(p.id, PredictionQuery(order="Suggested")))
    assert set(suggested[:2]) == {ids[2], ids[3]}  # least certain first: 0.4/0.6 and 0.6/0.4
    assert set(suggested[4:]) == {ids[0], ids[5]}  # the sure ones last: 0.0/1.0 and 1.0/0.0
    assert {pred.id: domain for pred, domain in cv.predictions.query(p.id, PredictionQuery()).results} \
        == {i: p.domain for i in ids}


def test_prediction_query_pages(cv, p):
    _, _, preds = _stored_predictions(cv, p)
    newest = [x.id for x in preds][::-1]
    first = cv.predictions.query(p.id, PredictionQuery(max_count=4))
    assert _ids(first) == newest[:4] and first.next_offset == 4
    last = cv.predictions.query(p.id, PredictionQuery(offset=first.next_offset, max_count=4))
    assert _ids(last) == newest[4:] and last.next_offset is None
    exact = cv.predictions.query(p.id, PredictionQuery(offset=3, max_count=3))
    assert _ids(exact) == newest[3:] and exact.next_offset is None


def test_the_current_iteration_is_the_default_else_the_newest_completed(cv, p):
    with pytest.raises(errors.NoDefaultIteration):
        cv.iterations.current(p.id)
    one = _iteration(cv, p, 1, default=True)
    two = _iteration(cv, p, 2)
    _iteration(cv, p, 3, status=IterationStatus.Failed)
    assert cv.iterations.current(p.id).id == one.id  # the default wins over newer ones
    cv.iterations.delete(p.id, one.id, release_default=True)
    with cv.deps.uow() as uow:  # a project left without a default (as recovery can leave it)
        project = uow.projects.get(p.id)
        project.default_iteration_id = None
        uow.projects.update(project)
        uow.commit()
    assert cv.iterations.current(p.id).id == two.id  # the newest Completed one, never the Failed one
