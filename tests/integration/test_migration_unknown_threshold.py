"""Migration 0012: projects get an unknown threshold (NULL = the calibrated default), on both databases."""
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import insert, inspect

from core.views import project_json
from storage import make_engine, migrate, unit_of_work_factory
from storage import tables as t
from tests.integration.test_migration_tag_types import _alembic, database_url  # noqa: F401 - the fixture


def test_existing_projects_keep_the_default_and_a_setting_round_trips(database_url):  # noqa: F811
    engine = make_engine(database_url)
    _alembic(engine, command.upgrade, "0011")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as c:  # as the previous release wrote it
        c.execute(insert(t.projects).values(
            id="p1", workspace="T1", name="p1", name_lower="p1", description="", domain="Compact",
            classification_type="Multiclass", threshold=0.5, created_at=now, modified_at=now,
            last_iteration_number=0))

    migrate(engine)
    with unit_of_work_factory(engine)() as uow:
        p = uow.projects.get("p1")
        assert p.unknown_threshold is None and project_json(p)["settings"]["cvbot"]["unknownThreshold"] == 0.95
        p.unknown_threshold = 0.8
        uow.projects.update(p)
        uow.commit()
    with unit_of_work_factory(engine)() as uow:
        assert uow.projects.get("p1").unknown_threshold == 0.8

    _alembic(engine, command.downgrade, "0011")
    assert "unknown_threshold" not in {c["name"] for c in inspect(engine).get_columns("projects")}
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT name FROM projects").scalar_one() == "p1"
