"""Scheduled jobs' rules on fakes (core/usecases/schedule.py): which projects the nightly retraining trains, which
stored predictions expire (and their images with them), when an orphan blob is old enough to delete, and that a
(job, slot) or a claimed key is taken once."""
from __future__ import annotations

from datetime import timedelta

import pytest

from core import errors
from core.model import IterationStatus, JobRunStatus, Prediction, TagPrediction, utcnow
from core.rules import parse_retention, parse_retrain
from core.usecases import ImageUpload, Schedule, claim_once, run_once
from core.usecases.schedule import retention_days
from tests.helpers import png_bytes


def test_settings_values_parse_and_bad_ones_are_refused():
    assert parse_retrain("Nightly") == "nightly" and parse_retrain("off") is None
    assert [parse_retention(v) for v in ("30", 30, "7 days", "keep", "0", "default")] == [30, 30, 7, 0, 0, None]
    for bad in ("weekly", ""):
        with pytest.raises(errors.InvalidInput):
            parse_retrain(bad)
    for bad in ("-1", "ten", "99999", True):
        with pytest.raises(errors.InvalidInput):
            parse_retention(bad)


def test_project_settings_change_through_update(cv):
    p = cv.projects.create("birds")
    assert (p.retrain, p.prediction_retention_days) == (None, None)  # new projects: off, the install's default
    p = cv.projects.update(p.id, retrain="nightly", prediction_retention="30")
    assert (cv.projects.get(p.id).retrain, cv.projects.get(p.id).prediction_retention_days) == ("nightly", 30)
    with pytest.raises(errors.InvalidInput):
        cv.projects.update(p.id, retrain="hourly", threshold=0.9)
    assert cv.projects.get(p.id).threshold == 0.5  # bad input changes nothing
    p = cv.projects.update(p.id, retrain="off", prediction_retention="default")
    assert (p.retrain, p.prediction_retention_days) == (None, None)


def test_retention_the_project_wins_and_nothing_expires_by_default(cv):
    p = cv.projects.create("p")
    assert retention_days(p, None) is None and retention_days(p, 0) is None  # an upgrade deletes nothing
    assert retention_days(p, 30) == 30
    p.prediction_retention_days = 0
    assert retention_days(p, 30) is None  # kept for ever although the install says 30
    p.prediction_retention_days = 7
    assert retention_days(p, 30) == 7 and retention_days(p, None) == 7


def _labelled(cv, name: str, n: int = 5, seed: int = 0):
    p = cv.projects.create(name)
    a, b = cv.tags.create(p.id, "a"), cv.tags.create(p.id, "b")
    cv.images.add(p.id, [ImageUpload(png_bytes(seed=seed + i), f"{i}.png", [(a if i % 2 else b).id])
                         for i in range(2 * n)])
    return p, a, b


def test_nightly_retraining_takes_only_opted_in_projects_with_new_images(cv):
    opted, a, _ = _labelled(cv, "opted", seed=0)
    _labelled(cv, "not-opted", seed=100)
    few = cv.projects.create("too-few")
    cv.images.add(few.id, [ImageUpload(png_bytes(seed=300), "x.png", [])])
    empty = cv.projects.create("empty")
    for p in (opted, few, empty):
        cv.projects.update(p.id, retrain="nightly")

    first = Schedule(cv.deps).retrain()
    assert [s["name"] for s in first["started"]] == ["opted"]
    assert [s["name"] for s in first["skipped"]] == ["too-few"]  # its reason says why it cannot train
    assert "tag" in first["skipped"][0]["reason"]
    [it] = cv.iterations.list(opted.id)
    assert it.status == IterationStatus.Queued

    assert Schedule(cv.deps).retrain()["started"] == []  # still queued: not taken again
    cv.deps.runner.run_all()
    assert Schedule(cv.deps).retrain()["started"] == []  # nothing new since that iteration

    with cv.deps.uow() as uow:  # the iteration was queued an hour ago; an image arrives now
        stored = uow.iterations.get(it.id)
        stored.created_at -= timedelta(hours=1)
        uow.iterations.update(stored)
        uow.commit()
    cv.images.add(opted.id, [ImageUpload(png_bytes(seed=50), "new.png", [a.id])])
    again = Schedule(cv.deps).retrain()
    assert [(s["name"], s["number"]) for s in again["started"]] == [("opted", 2)]


def _prediction(cv, project_id: str, data: bytes, age_days: float) -> Prediction:
    sha = cv.deps.blobs.put(data)
    pred = Prediction(project_id=project_id, iteration_id="it", threshold=0.5, sha256=sha, stored=True,
                      predictions=[TagPrediction("t", "t", 0.9)], created_at=utcnow() - timedelta(days=age_days))
    with cv.deps.uow() as uow:
        uow.predictions.add(pred)
        uow.commit()
    return pred


def test_expired_predictions_go_with_their_images_unless_an_image_still_uses_them(cv):
    p, a, _ = _labelled(cv, "p", n=1)
    kept_forever = cv.projects.create("kept")
    cv.projects.update(kept_forever.id, prediction_retention="keep")
    training_image = cv.images.list(p.id)[0]
    old = _prediction(cv, p.id, png_bytes(seed=900), age_days=40)
    old_shared = _prediction(cv, p.id, cv.deps.blobs.get(training_image.sha256), age_days=40)
    young = _prediction(cv, p.id, png_bytes(seed=901), age_days=10)
    thumbnail = cv.deps.blobs.put(b"old's thumbnail")  # made when its link was first fetched
    with cv.deps.uow() as uow:
        uow.variants.put(old.sha256, "thumbnail", thumbnail)
        uow.commit()
    old_kept = _prediction(cv, kept_forever.id, png_bytes(seed=902), age_days=400)

    assert Schedule(cv.deps).expire_predictions(None)["predictions_deleted"] == 0  # the default keeps everything
    result = Schedule(cv.deps).expire_predictions(30)
    assert result == {"predictions_deleted": 2, "projects": 1}
    assert {x.id for x in cv.predictions.list(p.id)} == {young.id}
    assert not cv.deps.blobs.exists(old.sha256) and not cv.deps.blobs.exists(thumbnail)  # no orphan left behind
    assert cv.deps.blobs.exists(old_shared.sha256)  # still a training image's file
    assert cv.deps.blobs.exists(young.sha256) and cv.deps.blobs.exists(old_kept.sha256)
    assert [x.id for x in cv.predictions.list(kept_forever.id)] == [old_kept.id]


def test_orphan_blobs_are_deleted_only_once_unreferenced_for_the_grace_period(cv):
    p, *_ = _labelled(cv, "p", n=1)
    orphan = cv.deps.blobs.put(b"left behind")
    adopted = cv.deps.blobs.put(png_bytes(seed=77))  # an upload whose row comes later
    cv.deps.blobs.partials["tmp-old"] = 7200.0
    now = utcnow()
    jobs = Schedule(cv.deps)

    first = jobs.clean_store(3600, now)
    assert first["orphan_blobs_deleted"] == 0 and first["orphan_blobs_waiting"] == 2
    assert first["stale_partial_files_deleted"] == 1
    cv.images.add(p.id, [ImageUpload(png_bytes(seed=77), "late.png", [])])  # its row is committed now
    assert jobs.clean_store(3600, now + timedelta(minutes=30))["orphan_blobs_deleted"] == 0  # too young yet
    later = jobs.clean_store(3600, now + timedelta(hours=1))
    assert later["orphan_blobs_deleted"] == 1 and later["orphan_blobs_waiting"] == 0
    assert not cv.deps.blobs.exists(orphan) and cv.deps.blobs.exists(adopted)
    with cv.deps.uow() as uow:
        assert uow.orphans.marked() == {}  # forgotten once deleted or referenced again


def test_a_slot_runs_once_and_its_outcome_is_logged(cv):
    calls = []

    def body():
        calls.append(1)
        return {"n": len(calls)}

    first = run_once(cv.deps, "retrain", "2026-01-01T02:00", "host:1", body)
    assert first is not None and first.status == JobRunStatus.Done and first.result == {"n": 1}
    assert run_once(cv.deps, "retrain", "2026-01-01T02:00", "host:2", body) is None
    assert calls == [1]

    def broken():
        raise RuntimeError("disk on fire")

    failed = run_once(cv.deps, "retrain", "2026-01-02T02:00", "host:2", broken)
    assert failed is not None and failed.status == JobRunStatus.Failed and "disk on fire" in failed.result["error"]
    with cv.deps.uow() as uow:
        runs = {(r.slot, r.owner, r.status) for r in uow.job_runs.list("retrain")}
    assert runs == {("2026-01-01T02:00", "host:1", JobRunStatus.Done),
                    ("2026-01-02T02:00", "host:2", JobRunStatus.Failed)}


def test_a_key_is_claimed_once_until_it_expires(cv):
    now = utcnow()
    assert claim_once(cv.deps, "event:Ev1", 3600, now)
    assert not claim_once(cv.deps, "event:Ev1", 3600, now + timedelta(minutes=59))
    assert claim_once(cv.deps, "event:Ev2", 3600, now)
    assert claim_once(cv.deps, "event:Ev1", 3600, now + timedelta(hours=1, seconds=1))
    assert Schedule(cv.deps).clean_store(3600, now + timedelta(hours=3))["expired_claims_deleted"] == 2



def test_on_a_shared_store_an_orphan_stored_again_meanwhile_is_young_and_kept(cv):
    class SharedBlobs(type(cv.deps.blobs)):  # an S3-like store: ages known, a put of stored content renews it
        shared = True

        def __init__(self):
            super().__init__()
            self.written: dict[str, float] = {}
            self.clock = 0.0

        def put(self, data: bytes) -> str:
            key = super().put(data)
            self.written[key] = self.clock
            return key

        def age_seconds(self, key: str) -> float | None:
            return self.clock - self.written[key] if key in self.blobs else None

    blobs = SharedBlobs()
    cv.deps.blobs = blobs
    renewed, stale = blobs.put(b"stored again by an upload in flight"), blobs.put(b"nobody's")
    now = utcnow()
    jobs = Schedule(cv.deps)
    jobs.clean_store(3600, now)
    blobs.clock = 3600.0
    blobs.put(b"stored again by an upload in flight")  # its row is not committed yet
    assert jobs.clean_store(3600, now + timedelta(hours=1))["orphan_blobs_deleted"] == 1
    assert blobs.exists(renewed) and not blobs.exists(stale)
