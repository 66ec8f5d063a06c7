"""Migration 0004: an iteration's tag types move from its performance JSON to a column, on both databases."""
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import insert, inspect, select

from core.model import TagType
from storage import make_engine, migrate, unit_of_work_factory
from storage import tables as t
from storage.db import MIGRATIONS


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


def test_tag_types_leave_performance_for_their_own_column(database_url):
    engine = make_engine(database_url)
    _alembic(engine, command.upgrade, "0003")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as c:  # as the previous release wrote them
        c.execute(insert(t.projects).values(
            id="p1", workspace="T1", name="old", name_lower="old", description="", domain="Compact",
            classification_type="Multiclass", threshold=0.5, created_at=now, modified_at=now))
        rows = [("i1", ["t1", "t2"], {"precision": 0.9, "tagTypes": ["Regular", "Negative"]}),
                ("i2", ["t1"], {"precision": 0.5}),  # written before tag types were recorded at all
                ("i3", ["t1", "t2"], None)]  # a Failed iteration has no performance
        for n, (iid, tag_ids, perf) in enumerate(rows, 1):
            c.execute(insert(t.iterations).values(
                id=iid, project_id="p1", number=n, name=f"Iteration {n}", status="Completed", fingerprint="f",
                domain="Compact", classification_type="Multiclass", backbone_id="b", tag_ids=tag_ids,
                tag_names=["a", "b"][:len(tag_ids)], performance=perf, created_at=now))

    migrate(engine)
    uow = unit_of_work_factory(engine)()
    with uow:
        got = {i: uow.iterations.get(i) for i in ("i1", "i2", "i3")}
    assert got["i1"].tag_types == [TagType.Regular, TagType.Negative]
    assert got["i1"].performance == {"precision": 0.9}
    assert got["i2"].tag_types == [TagType.Regular] and got["i2"].performance == {"precision": 0.5}
    assert got["i3"].tag_types == [TagType.Regular, TagType.Regular] and got["i3"].performance is None

    _alembic(engine, command.downgrade, "0003")  # and back: the types return into performance
    assert "tag_types" not in {c["name"] for c in inspect(engine).get_columns("iterations")}
    with engine.connect() as c:
        perf = dict(c.execute(select(t.iterations.c.id, t.iterations.c.performance)).all())
    assert perf["i1"] == {"precision": 0.9, "tagTypes": ["Regular", "Negative"]}
    engine.dispose()
