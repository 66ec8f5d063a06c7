"""`cvbot doctor`'s checks (core.usecases.doctor) on fakes: each kind of damage is found, `repair` fixes what is
safe and says so, and a clean store reports clean."""
import numpy as np
import pytest

from core.model import Export, ExportStatus, Iteration, IterationStatus
from core.usecases import ImageUpload, doctor, recover
from tests.helpers import png_bytes


@pytest.fixture
def store(cv):
    """A project with two images, a Completed default iteration (probe, evaluation) and a finished export."""
    p = cv.projects.create("docs")
    tag = cv.tags.create(p.id, "t")
    cv.images.add(p.id, [ImageUpload(png_bytes(seed=i), f"{i}.png", [tag.id]) for i in range(2)])
    deps = cv.deps
    it = Iteration(project_id=p.id, number=1, name="Iteration 1", domain=p.domain,
                   classification_type=p.classification_type, backbone_id="b", status=IterationStatus.Completed,
                   probe_key=deps.blobs.put(b"probe"), evaluation_key=deps.blobs.put(b"evaluation"),
                   publish_name="prod")
    export = Export(iteration_id=it.id, platform="ONNX", status=ExportStatus.Done, blob_key=deps.blobs.put(b"zip"))
    with deps.uow() as uow:
        uow.iterations.add(it)
        uow.exports.add(export)
        project = uow.projects.get(p.id)
        project.default_iteration_id = it.id
        uow.projects.update(project)
        uow.embeddings.put_many("b", {i.sha256: np.ones(4, np.float32) for i in uow.images.list(p.id)})
        uow.commit()
    return cv, p, it, export


def _problems(report):
    return {c.name: c.problems for c in report.checks if c.problems}


def test_a_sound_store_is_clean(store):
    cv, *_ = store
    report = doctor(cv.deps)
    assert report.ok and _problems(report) == {}
    assert doctor(cv.deps, repair=True, exclusive=True).ok


def test_repair_needs_the_store_to_itself(store):
    with pytest.raises(ValueError):
        doctor(store[0].deps, repair=True)


def test_missing_image_files_are_reported_not_repaired(store):
    cv, p, *_ = store
    img = cv.images.list(p.id)[0]
    cv.deps.blobs.delete(img.sha256)
    report = doctor(cv.deps, repair=True, exclusive=True)
    check = report.check("missing_image_files")
    assert not report.ok and check.problems == 1 and check.repaired == 0
    assert img.id in check.details[0] and "backup" in check.advice
    assert cv.images.count(p.id) == 2  # nothing deleted


def test_an_iteration_whose_files_are_missing_is_failed_unpublished_and_released(store):
    cv, p, it, _ = store
    cv.deps.blobs.delete(it.probe_key)
    found = doctor(cv.deps)
    assert _problems(found) == {"broken_iterations": 1} and not found.ok
    assert cv.iterations.get(p.id, it.id).status == IterationStatus.Completed  # a check alone changes nothing
    fixed = doctor(cv.deps, repair=True, exclusive=True)
    assert fixed.ok and fixed.check("broken_iterations").repaired == 1
    again = cv.iterations.get(p.id, it.id)
    assert again.status == IterationStatus.Failed and "missing" in again.failure_reason
    assert again.publish_name is None and cv.projects.get(p.id).default_iteration_id is None
    assert doctor(cv.deps).ok  # the leftover evaluation blob is referenced by a Failed iteration: fine


def test_an_export_whose_file_is_missing_is_failed(store):
    cv, p, it, export = store
    cv.deps.blobs.delete(export.blob_key)
    assert _problems(doctor(cv.deps)) == {"broken_exports": 1}
    assert doctor(cv.deps, repair=True, exclusive=True).ok
    (again,) = cv.exports.list(p.id, it.id)
    assert again.status == ExportStatus.Failed and again.blob_key is None and "missing" in again.failure_reason


def test_orphan_blobs_stale_partials_and_orphan_embeddings_are_removed(store):
    cv, *_ = store
    orphan = cv.deps.blobs.put(b"nobody's")
    cv.deps.blobs.partials.update({"ab/cd/.tmp-old": 7200.0, "ab/cd/.tmp-new": 3.0})
    with cv.deps.uow() as uow:
        uow.embeddings.put_many("b", {"f" * 64: np.ones(4, np.float32)})
        uow.commit()
    report = doctor(cv.deps)
    assert _problems(report) == {"orphan_blobs": 1, "partial_files": 1, "orphan_embeddings": 1}
    assert "younger" in report.check("partial_files").note
    fixed = doctor(cv.deps, repair=True, exclusive=True)
    assert fixed.ok and {c.name: c.repaired for c in fixed.checks if c.repaired} == {
        "orphan_blobs": 1, "partial_files": 1, "orphan_embeddings": 1}
    assert not cv.deps.blobs.exists(orphan) and list(cv.deps.blobs.partials) == ["ab/cd/.tmp-new"]
    with cv.deps.uow() as uow:
        assert uow.embeddings.count() == 2


def test_interrupted_work_counts_only_when_no_server_holds_the_store(store):
    cv, p, it, _ = store
    queued = Iteration(project_id=p.id, number=2, name="Iteration 2", domain=p.domain,
                       classification_type=p.classification_type, backbone_id="b")
    with cv.deps.uow() as uow:
        uow.iterations.add(queued)
        uow.commit()
    shared = doctor(cv.deps)
    assert shared.ok and "running" in shared.check("interrupted").note
    alone = doctor(cv.deps, exclusive=True)
    assert _problems(alone) == {"interrupted": 1}
    assert doctor(cv.deps, repair=True, exclusive=True).ok
    assert cv.iterations.get(p.id, queued.id).status == IterationStatus.Failed


def test_start_up_recovery_removes_stale_partials_and_counts_missing_files(store):
    cv, p, *_ = store
    cv.deps.blobs.partials.update({"ab/cd/.tmp-old": 7200.0, "ab/cd/.tmp-new": 3.0})
    cv.deps.blobs.delete(cv.images.list(p.id)[0].sha256)
    report = recover(cv.deps)
    assert report["stale_partial_files_deleted"] == 1 and report["missing_files"] == 1
    assert list(cv.deps.blobs.partials) == ["ab/cd/.tmp-new"]
    assert recover(cv.deps, clean_blobs=False)["stale_partial_files_deleted"] == 0


def test_deleting_images_drops_their_cached_embeddings_so_the_store_stays_clean(store):
    cv, p, it, _ = store
    cv.iterations.unpublish(p.id, it.id)
    cv.iterations.delete(p.id, it.id, release_default=True)
    cv.images.delete(p.id, [i.id for i in cv.images.list(p.id)])
    with cv.deps.uow() as uow:
        assert uow.embeddings.count() == 0
    assert doctor(cv.deps).ok


def test_a_shared_store_collects_orphans_only_once_they_are_old(store):
    """On a store other machines write to (S3), an unreferenced blob may be another machine's upload whose row is
    not committed yet: recovery and doctor delete it only once untouched for an hour."""
    cv, p, *_ = store
    blobs = cv.deps.blobs
    ages: dict[str, float] = {}
    blobs.shared = True
    blobs.age_seconds = lambda key: ages.get(key, 0.0) if key in blobs.blobs else None
    young, old = blobs.put(b"being written elsewhere"), blobs.put(b"left by a crash")
    ages[old] = 7200.0
    report = recover(cv.deps, clean_blobs=True)
    assert report["orphan_blobs_deleted"] == 1 and blobs.exists(young) and not blobs.exists(old)
    checked = doctor(cv.deps, exclusive=True)
    assert checked.ok and "left alone" in checked.check("orphan_blobs").note
    ages[young] = 3601.0
    assert _problems(doctor(cv.deps, exclusive=True)) == {"orphan_blobs": 1}
    assert doctor(cv.deps, repair=True, exclusive=True).ok and not blobs.exists(young)
    assert all(blobs.exists(i.sha256) for i in cv.images.list(p.id))
