"""Migration 0005: each project's iteration counter starts at its highest iteration number, on both databases."""
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import insert, inspect, select

from storage import make_engine, migrate, unit_of_work_factory
from storage import tables as t
from tests.integration.test_migration_tag_types import _alembic, database_url  # noqa: F401 - the fixture


def test_the_counter_starts_at_each_projects_highest_number(database_url):  # noqa: F811
    engine = make_engine(database_url)
    _alembic(engine, command.upgrade, "0004")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as c:  # as the previous release wrote them: iteration 2 deleted, 1 and 3 kept
        for pid in ("p1", "p2"):
            c.execute(insert(t.projects).values(
                id=pid, workspace="T1", name=pid, name_lower=pid, description="", domain="Compact",
                classification_type="Multiclass", threshold=0.5, created_at=now, modified_at=now))
        for n in (1, 3):
            c.execute(insert(t.iterations).values(
                id=f"i{n}", project_id="p1", number=n, name=f"Iteration {n}", status="Completed", fingerprint="f",
                domain="Compact", classification_type="Multiclass", backbone_id="b", tag_ids=[], tag_names=[],
                created_at=now))

    migrate(engine)
    with engine.connect() as c:
        counters = dict(c.execute(select(t.projects.c.id, t.projects.c.last_iteration_number)).all())
    assert counters == {"p1": 3, "p2": 0}
    with unit_of_work_factory(engine)() as uow:
        assert uow.iterations.get("i1") is not None and uow.iterations.get("i3") is not None
        assert (uow.iterations.next_number("p1"), uow.iterations.next_number("p2")) == (4, 1)

    _alembic(engine, command.downgrade, "0004")
    assert "last_iteration_number" not in {c["name"] for c in inspect(engine).get_columns("projects")}
