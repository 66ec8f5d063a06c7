"""Migration 0013: stored predictions keep their unknown score (NULL for those stored before), on both databases."""
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import insert, inspect

from core.views import prediction_json
from storage import make_engine, migrate, unit_of_work_factory
from storage import tables as t
from tests.integration.test_migration_tag_types import _alembic, database_url  # noqa: F401 - the fixture


def test_older_predictions_read_back_without_a_score_and_new_ones_with_it(database_url):  # noqa: F811
    engine = make_engine(database_url)
    _alembic(engine, command.upgrade, "0012")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    results = [{"tagId": "t1", "tagName": "cat", "probability": 0.9, "tagType": "Regular"}]
    with engine.begin() as c:  # as the previous release wrote them
        c.execute(insert(t.projects).values(
            id="p1", workspace="T1", name="p1", name_lower="p1", description="", domain="Compact",
            classification_type="Multiclass", threshold=0.5, created_at=now, modified_at=now,
            last_iteration_number=1))
        c.exec_driver_sql("INSERT INTO predictions (id, project_id, iteration_id, sha256, threshold, results, "
                          "created_at) VALUES ('old', 'p1', 'i1', NULL, 0.5, '" + str(results).replace("'", '"')
                          + "', '2026-01-02 03:04:05+00:00')")

    migrate(engine)
    with unit_of_work_factory(engine)() as uow:
        old = uow.predictions.get("old")
        assert old.unknown_score is None and "unknownScore" not in prediction_json(old)
        assert old.predictions[0].tag_name == "cat"
        new = uow.predictions.get("old")
        new.id, new.unknown_score, new.unknown_threshold = "new", 0.97, 0.9
        uow.predictions.add(new)
        uow.commit()
    with unit_of_work_factory(engine)() as uow:
        back = uow.predictions.get("new")
        assert (back.unknown_score, back.unknown_threshold, back.unknown) == (0.97, 0.9, True)

    _alembic(engine, command.downgrade, "0012")
    assert not {"unknown_score", "unknown_threshold"} & {c["name"] for c in inspect(engine).get_columns("predictions")}
    with engine.connect() as c:
        assert sorted(c.exec_driver_sql("SELECT id FROM predictions").scalars()) == ["new", "old"]
