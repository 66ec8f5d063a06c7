"""Every use case sees only its scope's workspace, a prediction key only reads and classifies, and the system scope
sees every workspace: on SQLite and PostgreSQL, with the fake backbone (the rules here are not the model's)."""
import pytest

from core import errors
from core.model import IterationStatus
from core.usecases import ImageUpload, Scope, UseCases
from core.usecases.prediction import PredictionQuery
from tests.conftest import make_deps
from tests.fakes import FakeBackbones
from tests.helpers import png_bytes

A, B = "T-A", "T-B"


@pytest.fixture(params=["sqlite", "postgresql"])
def deps(request, tmp_path):
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    return make_deps(tmp_path, FakeBackbones(), database_url=url)


@pytest.fixture
def world(deps):
    """A trained project of workspace A with an image, a stored prediction, a published iteration and a channel."""
    a = UseCases(deps, Scope.of(A))
    p = a.projects.create("a's project")
    red, green = a.tags.create(p.id, "red"), a.tags.create(p.id, "green")
    added = a.images.add(p.id, [ImageUpload(png_bytes(seed=i, size=(8, 8)), "", [red.id if i < 5 else green.id])
                                for i in range(10)])
    it = a.training.wait(p.id, a.training.train(p.id).id, timeout=60)
    assert it.status == IterationStatus.Completed, it.failure_reason
    a.iterations.publish(p.id, it.id, "prod")
    pred = a.predictions.predict(p.id, png_bytes(seed=100, size=(8, 8)))
    a.channels.bind("C-A", p.id, "U1")
    a.notifications.set_target(p.id, it.id, "slack", {"channel": "C-A"})
    return a, p, red, it, pred, added[0].image


def _unchanged(a, p, red, it, pred, image):
    assert [x.id for x in a.projects.list()] == [p.id] and a.projects.get(p.id).name == "a's project"
    assert sorted(t.name for t in a.tags.list(p.id)) == ["green", "red"]
    assert a.images.count(p.id) == 10 and a.images.get_many(p.id, [image.id])[0].tag_ids == [red.id]
    assert [(i.id, i.name, i.publish_name) for i in a.iterations.list(p.id)] == [(it.id, it.name, "prod")]
    assert a.projects.get(p.id).default_iteration_id == it.id
    assert [x.id for x in a.predictions.list(p.id)] == [pred.id]
    assert a.channels.binding("C-A").project_id == p.id
    assert a.exports.list(p.id, it.id) == []


def test_a_project_of_another_workspace_is_not_found_in_any_area(deps, world):
    a, p, red, it, pred, image = world
    b = UseCases(deps, Scope.of(B))
    data = png_bytes(seed=7, size=(8, 8))
    calls = {
        "projects": [lambda: b.projects.get(p.id), lambda: b.projects.find(p.id), lambda: b.projects.find(p.name),
                     lambda: b.projects.summary(p.id), lambda: b.projects.update(p.id, name="mine"),
                     lambda: b.projects.delete(p.id)],
        "tags": [lambda: b.tags.list(p.id), lambda: b.tags.get(p.id, red.id), lambda: b.tags.create(p.id, "blue"),
                 lambda: b.tags.update(p.id, red.id, name="mine"), lambda: b.tags.delete(p.id, red.id),
                 lambda: b.tags.get_or_create(p.id, ["blue"])],
        "images": [lambda: b.images.list(p.id), lambda: b.images.count(p.id),
                   lambda: b.images.get_many(p.id, [image.id]), lambda: b.images.data(p.id, image.id),
                   lambda: b.images.add(p.id, [ImageUpload(data)]), lambda: b.images.set_tags(p.id, [image.id], []),
                   lambda: b.images.add_tags(p.id, [image.id], [red.id]),
                   lambda: b.images.remove_tags(p.id, [image.id]), lambda: b.images.tag_images(p.id, []),
                   lambda: b.images.delete(p.id, [image.id]), lambda: b.images.delete(p.id, all_images=True)],
        "iterations": [lambda: b.training.train(p.id, force=True), lambda: b.training.wait(p.id, it.id, 1),
                       lambda: b.iterations.list(p.id), lambda: b.iterations.get(p.id, it.id),
                       lambda: b.iterations.by_number(p.id, 1), lambda: b.iterations.rename(p.id, it.id, "mine"),
                       lambda: b.iterations.set_default(p.id, it.id),
                       lambda: b.iterations.publish(p.id, it.id, "mine"),
                       lambda: b.iterations.unpublish(p.id, it.id),
                       lambda: b.iterations.delete(p.id, it.id, release_default=True),
                       lambda: b.iterations.performance(p.id, it.id),
                       lambda: b.iterations.image_performances(p.id, it.id),
                       lambda: b.notifications.set_target(p.id, it.id, "slack", None),
                       lambda: b.notifications.mark_reported(p.id, it.id)],
        "predictions": [lambda: b.predictions.predict(p.id, data), lambda: b.predictions.predict(p.id, data,
                                                                                              publish_name="prod"),
                        lambda: b.predictions.predict(p.id, data, iteration_id=it.id),
                        lambda: b.predictions.get(p.id, pred.id), lambda: b.predictions.list(p.id),
                        lambda: b.predictions.query(p.id, PredictionQuery()),
                        lambda: b.predictions.delete(p.id, [pred.id]),
                        lambda: b.predictions.add_to_training(p.id, pred.id, [red.id])],
        "exports": [lambda: b.exports.start(p.id, it.id), lambda: b.exports.list(p.id, it.id)],
        "channels": [lambda: b.channels.bind("C-B", p.id), lambda: b.channels.for_project(p.id)],
    }
    for area, area_calls in calls.items():
        for n, call in enumerate(area_calls):
            with pytest.raises(errors.NotFound):
                call()
                pytest.fail(f"{area} call {n} reached workspace A's project")
    assert b.projects.list() == [] and b.channels.binding("C-A") is None
    assert b.notifications.unreported("slack") == []
    _unchanged(a, p, red, it, pred, image)


def test_a_prediction_scope_classifies_and_reads_but_writes_nothing(deps, world):
    a, p, red, it, pred, image = world
    reader = UseCases(deps, Scope.of(A, "prediction"))
    data = png_bytes(seed=8, size=(8, 8))
    classified = reader.predictions.predict(p.id, data, publish_name="prod")
    assert classified.iteration_id == it.id and classified.stored
    assert reader.projects.get(p.id).id == p.id and [x.id for x in reader.projects.list()] == [p.id]
    assert sorted(t.name for t in reader.tags.list(p.id)) == ["green", "red"]
    assert reader.images.count(p.id) == 10 and reader.images.data(p.id, image.id)
    assert [i.id for i in reader.iterations.list(p.id)] == [it.id]
    assert reader.iterations.performance(p.id, it.id)["perTagPerformance"]
    assert {x.id for x in reader.predictions.list(p.id)} == {pred.id, classified.id}
    writes = [
        lambda: reader.projects.create("new"), lambda: reader.projects.update(p.id, name="x"),
        lambda: reader.projects.delete(p.id),
        lambda: reader.tags.create(p.id, "blue"), lambda: reader.tags.update(p.id, red.id, name="x"),
        lambda: reader.tags.delete(p.id, red.id), lambda: reader.tags.get_or_create(p.id, ["blue"]),
        lambda: reader.images.add(p.id, [ImageUpload(data)]), lambda: reader.images.add_tags(p.id, [image.id], []),
        lambda: reader.images.set_tags(p.id, [image.id], []), lambda: reader.images.delete(p.id, [image.id]),
        lambda: reader.training.train(p.id, force=True),
        lambda: reader.iterations.rename(p.id, it.id, "x"), lambda: reader.iterations.set_default(p.id, it.id),
        lambda: reader.iterations.publish(p.id, it.id, "x"), lambda: reader.iterations.unpublish(p.id, it.id),
        lambda: reader.iterations.delete(p.id, it.id, release_default=True),
        lambda: reader.predictions.delete(p.id, [pred.id]),
        lambda: reader.predictions.add_to_training(p.id, pred.id, [red.id]),
        lambda: reader.exports.start(p.id, it.id), lambda: reader.channels.bind("C-X", p.id),
        lambda: reader.channels.keys(),
    ]
    for n, call in enumerate(writes):
        with pytest.raises(errors.Forbidden):
            call()
            pytest.fail(f"write {n} was allowed to a prediction scope")
    a.predictions.delete(p.id, [classified.id])
    _unchanged(a, p, red, it, pred, image)


def test_the_system_scope_sees_every_workspace(deps, world):
    a, p, red, it, pred, image = world
    other = UseCases(deps, Scope.of(B)).projects.create("b's project")
    system = UseCases(deps, Scope.system())
    assert {x.id for x in system.projects.list()} == {p.id, other.id}
    assert system.projects.get(p.id).workspace == A and system.projects.get(other.id).workspace == B
    assert system.projects.find("B'S PROJECT").id == other.id
    assert [i.id for i in system.iterations.list(p.id)] == [it.id]
    assert system.predictions.get(p.id, pred.id).id == pred.id
    assert [x.id for x in system.notifications.unreported("slack")] == [it.id]
    system.tags.create(other.id, "made by maintenance")
    assert [t.name for t in UseCases(deps, Scope.of(B)).tags.list(other.id)] == ["made by maintenance"]
    with pytest.raises(ValueError):
        Scope(None)  # only the system role spans every workspace
