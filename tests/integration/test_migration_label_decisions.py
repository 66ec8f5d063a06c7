"""Migration 0010: the channel setting keep_untagged and the label_decisions table, on both databases: existing
bindings survive (keep_untagged off), decisions round-trip and are replaced in place, go with their image and their
project, and downgrade removes both."""
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import insert, inspect

from core.model import DecisionKind, Image, LabelDecision
from storage import make_engine, migrate, unit_of_work_factory
from storage import tables as t
from tests.integration.test_migration_tag_types import _alembic, database_url  # noqa: F401 - the fixture


def test_keep_untagged_and_decisions_round_trip(database_url):  # noqa: F811
    engine = make_engine(database_url)
    _alembic(engine, command.upgrade, "0008")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as c:  # as the previous release wrote them
        for pid in ("p1", "p2"):
            c.execute(insert(t.projects).values(
                id=pid, workspace="T1", name=pid, name_lower=pid, description="", domain="Compact",
                classification_type="Multiclass", threshold=0.5, created_at=now, modified_at=now))
        c.execute(insert(t.channel_bindings).values(workspace="T1", channel_id="C1", project_id="p1",
                                                    bound_by="U1", updated_at=now))

    migrate(engine)
    uow_factory = unit_of_work_factory(engine)
    with uow_factory() as uow:
        binding = uow.channels.get("T1", "C1")
        assert binding is not None and binding.keep_untagged is False and binding.bound_by == "U1"
        binding.keep_untagged = True
        uow.channels.put(binding)
        for iid, pid in (("i1", "p1"), ("i2", "p1"), ("i3", "p2")):
            uow.images.add(Image(project_id=pid, sha256=iid * 8, width=1, height=1, id=iid))
        uow.decisions.put(LabelDecision("p1", "i1", DecisionKind.Audit, "t1", "keep", "U1", now))
        uow.decisions.put(LabelDecision("p1", "i1", DecisionKind.Suggest, "", "skip", "U1", now))
        uow.decisions.put(LabelDecision("p1", "i2", DecisionKind.Audit, "t1,t2", "retag", None, now))
        uow.decisions.put(LabelDecision("p2", "i3", DecisionKind.Audit, "t3", "keep", "U2", now))
        uow.commit()
    with uow_factory() as uow:
        assert uow.channels.get("T1", "C1").keep_untagged is True
        audit = uow.decisions.for_project("p1", "audit")
        assert set(audit) == {"i1", "i2"} and audit["i1"].decision == "keep" and audit["i1"].decided_at == now
        assert audit["i2"].tags_key == "t1,t2" and audit["i2"].decided_by is None
        assert set(uow.decisions.for_project("p1", "suggest")) == {"i1"}
        uow.decisions.put(LabelDecision("p1", "i1", DecisionKind.Audit, "t2", "retag", "U3", now))  # replaced
        uow.images.delete("i2")
        uow.commit()
    with uow_factory() as uow:
        audit = uow.decisions.for_project("p1", "audit")
        assert set(audit) == {"i1"} and audit["i1"].tags_key == "t2" and audit["i1"].decided_by == "U3"
        uow.projects.delete("p1")
        uow.commit()
    with uow_factory() as uow:
        assert uow.decisions.for_project("p1", "audit") == {}
        assert set(uow.decisions.for_project("p2", "audit")) == {"i3"}

    _alembic(engine, command.downgrade, "0008")
    assert "label_decisions" not in inspect(engine).get_table_names()
    assert "keep_untagged" not in {c["name"] for c in inspect(engine).get_columns("channel_bindings")}
