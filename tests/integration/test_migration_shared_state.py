"""Migration 0009 (claims, scheduled job runs, orphan candidates, projects' schedule settings) on both databases,
and the migration lock: processes that start together on a new database migrate it once."""
from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import insert, inspect, select

from core.model import JobRun, JobRunStatus
from storage import make_engine, migrate, unit_of_work_factory
from storage import tables as t
from storage.db import HEAD_REVISION, schema_revisions
from tests.integration.test_migration_tag_types import _alembic, database_url  # noqa: F401 - the fixture

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_upgrade_keeps_projects_unscheduled_and_the_new_tables_work(database_url):  # noqa: F811
    engine = make_engine(database_url)
    _alembic(engine, command.upgrade, "0008")
    with engine.begin() as c:  # as the previous release wrote it: a project with a tag
        c.execute(insert(t.projects).values(
            id="p1", workspace="T1", name="old", name_lower="old", description="", domain="Compact",
            classification_type="Multiclass", threshold=0.5, created_at=NOW, modified_at=NOW))
        c.execute(insert(t.tags).values(id="t1", project_id="p1", name="cat", name_lower="cat", type="Regular",
                                        description="", created_at=NOW))

    assert migrate(engine) and schema_revisions(engine) == {HEAD_REVISION}
    uow_factory = unit_of_work_factory(engine)
    with uow_factory() as uow:
        p = uow.projects.get("p1")
        assert p is not None and p.retrain is None and p.prediction_retention_days is None  # upgrade changes nothing
        p.retrain, p.prediction_retention_days = "nightly", 0
        uow.projects.update(p)
        assert uow.claims.claim("event:Ev1", NOW + timedelta(hours=1), NOW)
        assert uow.job_runs.start(JobRun("retrain", "2026-01-02T02:00", "host:1", NOW))
        uow.orphans.mark(["a" * 64], NOW)
        uow.commit()
    with uow_factory() as uow:
        p = uow.projects.get("p1")
        assert (p.retrain, p.prediction_retention_days) == ("nightly", 0)
        assert not uow.claims.claim("event:Ev1", NOW + timedelta(hours=2), NOW + timedelta(minutes=59))
        assert uow.claims.claim("event:Ev1", NOW + timedelta(hours=3), NOW + timedelta(hours=1))  # expired: taken
        assert not uow.job_runs.start(JobRun("retrain", "2026-01-02T02:00", "host:2", NOW))
        uow.job_runs.finish("retrain", "2026-01-02T02:00", JobRunStatus.Done, {"started": 1}, NOW)
        uow.orphans.mark(["a" * 64], NOW + timedelta(days=1))  # the first time it was found is kept
        uow.commit()
    with uow_factory() as uow:
        [run] = uow.job_runs.list("retrain")
        assert (run.owner, run.status, run.result, run.finished_at) == ("host:1", JobRunStatus.Done, {"started": 1},
                                                                         NOW)
        assert uow.orphans.marked() == {"a" * 64: NOW}
        assert uow.claims.purge(NOW + timedelta(hours=3)) == 1

    _alembic(engine, command.downgrade, "0008")
    names = inspect(engine).get_table_names()
    assert not {"claims", "job_runs", "orphan_blobs"} & set(names)
    columns = {c["name"] for c in inspect(engine).get_columns("projects")}
    assert not {"retrain", "prediction_retention_days"} & columns
    with engine.connect() as c:  # no project's rows went by cascade, neither way
        assert c.execute(select(t.projects.c.name)).scalars().all() == ["old"]
        assert c.execute(select(t.tags.c.id)).scalars().all() == ["t1"]


def test_processes_starting_together_migrate_a_new_database_once(database_url):  # noqa: F811
    """Six engines (as six processes would have) migrate one new database at the same moment: every one succeeds,
    Alembic's work is done once (the others find the head revision) and the schema is whole."""
    engines = [make_engine(database_url) for _ in range(6)]
    start = threading.Barrier(len(engines))
    results: list[object] = [None] * len(engines)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = migrate(engines[i], force=True)  # force: every one goes past the up-to-date shortcut
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            results[i] = e

    # daemon threads and one deadline: migrations that deadlock fail the test instead of hanging the run
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(engines))]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 120
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    assert results == [True] * len(engines), results
    assert schema_revisions(engines[0]) == {HEAD_REVISION}
    assert set(t.metadata.tables) <= set(inspect(engines[0]).get_table_names())
    with engines[0].connect() as c:  # one row in alembic_version: nobody stamped twice
        assert c.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar_one() == 1
    for e in engines:
        e.dispose()
