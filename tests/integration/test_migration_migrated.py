"""Migration 0008: the `migrated` records of `cvbot migrate`, on both databases: existing rows survive, records
round-trip and are replaced in place, deleting the target project drops its records, downgrade drops the table."""
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import insert, inspect

from storage import make_engine, migrate, unit_of_work_factory
from storage import tables as t
from tests.integration.test_migration_tag_types import _alembic, database_url  # noqa: F401 - the fixture


def test_records_round_trip_and_go_with_their_project(database_url):  # noqa: F811
    engine = make_engine(database_url)
    _alembic(engine, command.upgrade, "0007")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as c:  # as the previous release wrote them
        for pid in ("p1", "p2"):
            c.execute(insert(t.projects).values(
                id=pid, workspace="T1", name=pid, name_lower=pid, description="", domain="Compact",
                classification_type="Multiclass", threshold=0.5, created_at=now, modified_at=now))

    migrate(engine)
    src = "https://westeurope.api.cognitive.microsoft.com"
    with unit_of_work_factory(engine)() as uow:
        assert uow.projects.get("p1") is not None
        assert uow.migrated.get(src, "image", "a") is None
        uow.migrated.put(src, "project", "a", "p1", "p1")
        uow.migrated.put(src, "image", "a", "img-1", "p1")
        uow.migrated.put("https://other", "image", "a", "img-9", "p2")
        uow.commit()
    with unit_of_work_factory(engine)() as uow:
        assert uow.migrated.get(src, "project", "a") == "p1"
        assert uow.migrated.get(src, "image", "a") == "img-1"
        assert uow.migrated.get("https://other", "image", "a") == "img-9"
        uow.migrated.put(src, "image", "a", "img-2", "p1")  # replaced, not duplicated
        uow.commit()
    with unit_of_work_factory(engine)() as uow:
        assert uow.migrated.get(src, "image", "a") == "img-2"
        uow.projects.delete("p1")
        uow.commit()
    with unit_of_work_factory(engine)() as uow:
        assert uow.migrated.get(src, "image", "a") is None and uow.migrated.get(src, "project", "a") is None
        assert uow.migrated.get("https://other", "image", "a") == "img-9"

    _alembic(engine, command.downgrade, "0007")
    assert "migrated" not in inspect(engine).get_table_names()
