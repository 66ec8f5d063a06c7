"""Migration 0007: images gain metadata, iterations the publish resource id; existing rows read back unchanged,
with no metadata and no resource id, on both databases; downgrade removes both columns."""
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import insert, inspect

from storage import make_engine, migrate, unit_of_work_factory
from storage import tables as t
from tests.integration.test_migration_tag_types import _alembic, database_url  # noqa: F401 - the fixture


def test_existing_rows_survive_and_the_new_columns_round_trip(database_url):  # noqa: F811
    engine = make_engine(database_url)
    _alembic(engine, command.upgrade, "0006")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as c:  # as the previous release wrote them
        c.execute(insert(t.projects).values(
            id="p1", workspace="T1", name="p1", name_lower="p1", description="", domain="Compact",
            classification_type="Multiclass", threshold=0.5, created_at=now, modified_at=now))
        c.execute(insert(t.images).values(id="img1", project_id="p1", sha256="a" * 64, width=4, height=3,
                                          original_name="a.png", source="api", created_at=now))
        c.execute(insert(t.iterations).values(
            id="i1", project_id="p1", number=1, name="Iteration 1", status="Completed", fingerprint="f",
            domain="Compact", classification_type="Multiclass", backbone_id="b", tag_ids=[], tag_names=[],
            publish_name="prod", created_at=now))

    migrate(engine)
    with unit_of_work_factory(engine)() as uow:
        [image] = uow.images.get_many(["img1"])
        it = uow.iterations.get("i1")
        assert (image.metadata, image.original_name) == ({}, "a.png")
        assert (it.publish_name, it.publish_resource_id) == ("prod", None)
        uow.images.set_metadata("img1", {"camera": "north", "ünïcode": "✓"})
        it.publish_resource_id = "/subscriptions/x/accounts/y"
        uow.iterations.update(it)
        uow.commit()
    with unit_of_work_factory(engine)() as uow:
        assert uow.images.get_many(["img1"])[0].metadata == {"camera": "north", "ünïcode": "✓"}
        assert uow.iterations.get("i1").publish_resource_id == "/subscriptions/x/accounts/y"
        uow.images.set_metadata("img1", {})
        uow.commit()
    with unit_of_work_factory(engine)() as uow:
        assert uow.images.get_many(["img1"])[0].metadata == {}

    _alembic(engine, command.downgrade, "0006")
    assert "metadata" not in {c["name"] for c in inspect(engine).get_columns("images")}
    assert "publish_resource_id" not in {c["name"] for c in inspect(engine).get_columns("iterations")}
