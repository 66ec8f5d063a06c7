"""The scheduled jobs' bodies on the real stores (SQLite and PostgreSQL, local blobs): expired predictions found by
date in SQL and deleted with their files; orphan blobs deleted only on a later run past the grace period."""
from __future__ import annotations

from datetime import timedelta

from core.model import Prediction, TagPrediction, utcnow
from core.usecases import Schedule


def _prediction(cv, project_id: str, data: bytes, age: timedelta) -> Prediction:
    pred = Prediction(project_id=project_id, iteration_id="it", threshold=0.5, sha256=cv.deps.blobs.put(data),
                      stored=True, predictions=[TagPrediction("t", "t", 0.9)], created_at=utcnow() - age)
    with cv.deps.uow() as uow:
        uow.predictions.add(pred)
        uow.commit()
    return pred


def test_retention_and_cleanup_on_the_real_stores(cv):
    p = cv.projects.create("kept 30 days")
    cv.projects.update(p.id, prediction_retention=30)
    old = _prediction(cv, p.id, b"old", timedelta(days=30, minutes=1))
    edge = _prediction(cv, p.id, b"edge", timedelta(days=29, hours=23))
    jobs = Schedule(cv.deps)
    assert jobs.expire_predictions(None) == {"predictions_deleted": 1, "projects": 1}
    assert [x.id for x in cv.predictions.list(p.id)] == [edge.id]
    assert not cv.deps.blobs.exists(old.sha256) and cv.deps.blobs.exists(edge.sha256)

    orphan = cv.deps.blobs.put(b"orphan")
    now = utcnow()
    assert jobs.clean_store(60, now)["orphan_blobs_deleted"] == 0 and cv.deps.blobs.exists(orphan)
    assert jobs.clean_store(60, now + timedelta(seconds=61))["orphan_blobs_deleted"] == 1
    assert not cv.deps.blobs.exists(orphan) and cv.deps.blobs.exists(edge.sha256)
