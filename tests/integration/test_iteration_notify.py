"""Where an adapter announces a training's outcome is kept with the iteration, so the outcome is still announced
after a restart: the notification use cases and migration 0003 on real SQLite and PostgreSQL."""
import threading
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import insert, inspect, select

from core.model import IterationStatus
from core.usecases import ImageUpload, Scope, UseCases, recover
from storage import make_engine, migrate
from storage import tables as t
from storage.db import MIGRATIONS
from tests.helpers import colour_images

RED, GREEN = (220, 30, 30), (30, 200, 40)
SLACK = {"channel": "C1", "ts": "1700000001.000100", "user": "U1"}


class HeldRunner:
    def __init__(self):
        self.jobs = []

    def submit(self, job, fn):
        self.jobs.append(fn)

    def release(self):
        threads = [threading.Thread(target=fn, daemon=True) for fn in self.jobs]
        self.jobs = []
        for th in threads:
            th.start()


def _project(cv):
    p = cv.projects.create("notify")
    red, green = cv.tags.create(p.id, "red"), cv.tags.create(p.id, "green")
    ups = [ImageUpload(d, f"r{i}.png", [red.id]) for i, d in enumerate(colour_images(5, RED, 1))]
    ups += [ImageUpload(d, f"g{i}.png", [green.id]) for i, d in enumerate(colour_images(5, GREEN, 2))]
    assert all(r.ok for r in cv.images.add(p.id, ups))
    return p


def _ids(iterations):
    return [i.id for i in iterations]


def test_notify_target_survives_training_and_restart_until_reported(cv):
    p = _project(cv)
    notes = cv.notifications
    runner = cv.deps.runner = HeldRunner()
    first = cv.training.train(p.id)
    assert cv.iterations.get(p.id, first.id).notify is None and notes.unreported("slack") == []

    notes.set_target(p.id, first.id, "slack", SLACK)
    stored = cv.iterations.get(p.id, first.id)
    assert stored.notify == {"slack": SLACK} and stored.reported_at is None
    # still queued: not listed as finished, but listed with the running ones
    assert notes.unreported("slack") == []
    assert _ids(notes.unreported("slack", include_running=True)) == [first.id]

    runner.release()  # the training thread rewrites the row twice (Training, Completed): the target stays
    done = cv.training.wait(p.id, first.id, timeout=120)
    assert done.status == IterationStatus.Completed and done.notify == {"slack": SLACK}
    assert _ids(notes.unreported("slack")) == [first.id]
    assert notes.unreported("teams") == []  # another adapter's key

    notes.mark_reported(p.id, first.id)
    assert cv.iterations.get(p.id, first.id).reported_at is not None
    assert notes.unreported("slack", include_running=True) == []

    # a second iteration cut off by a restart: recover fails it, and it is left to report with its reason
    second = cv.training.train(p.id, force=True)
    notes.set_target(p.id, second.id, "slack", {**SLACK, "ts": "1700000002.000100"})
    notes.set_target(p.id, second.id, "teams", {"conversation": "x"})
    runner.jobs = []  # the job dies with the server
    assert recover(cv.deps)["failed_iterations"] == 1
    (pending,) = notes.unreported("slack")
    assert pending.id == second.id and pending.status == IterationStatus.Failed
    assert "interrupted" in pending.failure_reason
    assert pending.notify == {"slack": {**SLACK, "ts": "1700000002.000100"}, "teams": {"conversation": "x"}}
    notes.set_target(p.id, second.id, "teams", None)  # forgetting one adapter's target keeps the others
    assert cv.iterations.get(p.id, second.id).notify == {"slack": {**SLACK, "ts": "1700000002.000100"}}
    notes.mark_reported(p.id, second.id)
    assert notes.unreported("slack") == []

    # reporting an iteration deleted meanwhile is no error
    cv.iterations.delete(p.id, second.id)
    notes.mark_reported(p.id, second.id)


def test_a_stale_whole_row_update_does_not_overwrite_the_target(cv):
    p = _project(cv)
    cv.deps.runner = HeldRunner()
    it = cv.training.train(p.id)
    with cv.deps.uow() as uow:
        stale = uow.iterations.get(it.id)  # read before the target is set, like a training thread does
    cv.notifications.set_target(p.id, it.id, "slack", SLACK)
    cv.notifications.mark_reported(p.id, it.id)
    stale.status = IterationStatus.Training
    with cv.deps.uow() as uow:
        uow.iterations.update(stale)
        uow.commit()
    now = cv.iterations.get(p.id, it.id)
    assert now.status == IterationStatus.Training and now.notify == {"slack": SLACK} and now.reported_at is not None


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'old.db'}"


def _alembic(engine, fn, target):
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        fn(cfg, target)


def test_migration_0003_keeps_existing_iterations(database_url, tmp_path, provider):
    engine = make_engine(database_url)
    _alembic(engine, command.upgrade, "0002")
    assert "notify" not in {c["name"] for c in inspect(engine).get_columns("iterations")}
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as c:  # a database written by the previous release: one Completed, one Failed iteration
        c.execute(insert(t.projects).values(
            id="p1", workspace="T1", name="old", name_lower="old", description="", domain="Compact",
            classification_type="Multiclass", threshold=0.5, created_at=now, modified_at=now))
        for n, status in ((1, "Completed"), (2, "Failed")):
            c.execute(insert(t.iterations).values(
                id=f"i{n}", project_id="p1", number=n, name=f"Iteration {n}", status=status, fingerprint="f",
                domain="Compact", classification_type="Multiclass", backbone_id="b", tag_ids=["t1"],
                tag_names=["red"], performance={"precision": 1.0}, created_at=now))

    migrate(engine)  # what start-up does: to the newest revision
    with engine.connect() as c:
        rows = c.execute(select(t.iterations.c.id, t.iterations.c.status, t.iterations.c.notify,
                                t.iterations.c.reported_at, t.iterations.c.tag_names)
                         .order_by(t.iterations.c.number)).all()
    assert [tuple(r) for r in rows] == [("i1", "Completed", None, None, ["red"]), ("i2", "Failed", None, None, ["red"])]

    from core.usecases import Deps
    from storage import LocalBlobStore, unit_of_work_factory

    system = UseCases(Deps(unit_of_work_factory(engine), LocalBlobStore(tmp_path / "blobs"), provider), Scope.system())
    assert system.notifications.unreported("slack") == []  # iterations from before the upgrade announce nothing
    system.notifications.set_target("p1", "i2", "slack", SLACK)
    assert _ids(system.notifications.unreported("slack")) == ["i2"]
    assert system.iterations.get("p1", "i1").performance == {"precision": 1.0}

    _alembic(engine, command.downgrade, "0002")  # and back, keeping the rows
    assert "notify" not in {c["name"] for c in inspect(engine).get_columns("iterations")}
    with engine.connect() as c:
        assert c.execute(select(t.iterations.c.id).order_by(t.iterations.c.id)).scalars().all() == ["i1", "i2"]
    engine.dispose()
