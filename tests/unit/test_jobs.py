"""Jobs as data (core/usecases/jobs.py) and the training job's re-run rules, on fakes: a queue may run a job again
after its worker died, or twice at once after a worker was wrongly taken for dead; an iteration must end Completed
exactly once and never stay Training."""
import pytest

from core.model import IterationStatus
from core.ports import Job
from core.training import ProgressBoard
from core.usecases import ImageUpload
from core.usecases.jobs import KINDS, run_job
from tests.fakes import FakeIterations
from tests.helpers import png_bytes


@pytest.fixture
def p(cv):
    return cv.projects.create("jobs")


def _trainable(cv, p, n=10):
    a, b = cv.tags.create(p.id, "a"), cv.tags.create(p.id, "b")
    ups = [ImageUpload(png_bytes(seed=i, size=(8, 8)), "", [a.id if i < n // 2 else b.id]) for i in range(n)]
    assert all(r.ok for r in cv.images.add(p.id, ups))


def _stored(cv, it):
    with cv.deps.uow() as uow:
        return uow.iterations.get(it.id)


def test_jobs_are_data_with_a_stable_id():
    a, b = Job("train", {"iteration_id": "x"}), Job("train", {"iteration_id": "x"})
    assert a == b and a.id == b.id and a.id.startswith("train-")
    assert Job("train", {"iteration_id": "y"}).id != a.id
    assert Job("embed", {"domain": "Compact", "sha256s": ["1", "2"]}).id != \
        Job("embed", {"domain": "Compact", "sha256s": ["1", "3"]}).id
    assert set(KINDS) == {"train", "export", "embed", "copy"}


def test_the_runner_is_handed_the_job_as_data(cv, p):
    _trainable(cv, p)
    it = cv.training.train(p.id)
    [(job, _)] = cv.deps.runner.jobs
    assert job == Job("train", {"iteration_id": it.id})
    run_job(cv.deps, job)  # what a worker process does with the stored job
    assert _stored(cv, it).status == IterationStatus.Completed


def test_an_unknown_kind_is_refused_not_dropped(cv):
    with pytest.raises(ValueError, match="unknown job kind 'resize'"):
        run_job(cv.deps, Job("resize", {}))


def test_a_training_cut_off_mid_job_is_trained_again(cv, p):
    _trainable(cv, p)
    it = cv.training.train(p.id)
    with cv.deps.uow() as uow:  # the first worker set Training, then died
        stored = uow.iterations.get(it.id)
        stored.status = IterationStatus.Training
        uow.iterations.update(stored)
        uow.commit()
    cv.deps.runner.run_all()  # the queue hands the job to another worker
    done = _stored(cv, it)
    assert done.status == IterationStatus.Completed and cv.projects.get(p.id).default_iteration_id == it.id


def test_running_a_finished_job_again_changes_nothing(cv, p):
    _trainable(cv, p)
    it = cv.training.train(p.id)
    [(job, _)] = cv.deps.runner.jobs
    cv.deps.runner.run_all()
    first = _stored(cv, it)
    embedded = cv.deps.stats.images
    run_job(cv.deps, job)
    again = _stored(cv, it)
    assert again.status == IterationStatus.Completed and again.trained_at == first.trained_at
    assert again.probe_key == first.probe_key and cv.deps.stats.images == embedded


class _Reentrant(ProgressBoard):
    """Runs a second copy of the job while the first is saving: two workers holding the same training."""

    def __init__(self, second):
        super().__init__()
        self.second = second

    def update(self, iteration_id, stage, done=0, total=0):
        super().update(iteration_id, stage, done, total)
        if stage == "saving" and self.second is not None:
            second, self.second = self.second, None
            second()


def test_two_overlapping_runs_complete_the_iteration_once(cv, p, monkeypatch):
    _trainable(cv, p)
    it = cv.training.train(p.id)
    [(job, _)] = cv.deps.runner.jobs
    updates = []
    real_update_if = FakeIterations.update_if

    def counting(self, iteration, statuses):
        won = real_update_if(self, iteration, statuses)
        if iteration.status == IterationStatus.Completed:
            updates.append(won)
        return won

    monkeypatch.setattr(FakeIterations, "update_if", counting)
    cv.deps.progress = _Reentrant(lambda: run_job(cv.deps, job))
    run_job(cv.deps, job)
    done = _stored(cv, it)
    assert updates == [True, False]  # the inner (later started) run completed it; the outer one changed nothing
    assert done.status == IterationStatus.Completed
    assert cv.deps.blobs.exists(done.probe_key) and cv.deps.blobs.exists(done.evaluation_key)


def test_a_failure_never_overwrites_a_completed_iteration(cv, p, monkeypatch):
    _trainable(cv, p)
    it = cv.training.train(p.id)
    [(job, _)] = cv.deps.runner.jobs
    cv.deps.runner.run_all()
    cv.deps.backbones.for_domain = lambda domain: (_ for _ in ()).throw(RuntimeError("no model"))
    with cv.deps.uow() as uow:  # a stale copy of the job starts while it reads Training
        stored = uow.iterations.get(it.id)
        stored.status = IterationStatus.Training
        uow.iterations.update(stored)
        uow.commit()

    real = FakeIterations.update_if

    def complete_meanwhile(self, iteration, statuses):
        if iteration.status == IterationStatus.Failed:  # the other run completed it just before this one fails
            with cv.deps.uow() as uow:
                s = uow.iterations.get(it.id)
                s.status = IterationStatus.Completed
                uow.iterations.update(s)
                uow.commit()
        return real(self, iteration, statuses)

    monkeypatch.setattr(FakeIterations, "update_if", complete_meanwhile)
    run_job(cv.deps, job)
    assert _stored(cv, it).status == IterationStatus.Completed


def test_with_embed_chunks_uploads_become_embedding_jobs(cv, p):
    cv.deps.embed_chunk = 4
    _trainable(cv, p)  # 10 new images: chunks of 4, 4, 2
    jobs = [job for job, _ in cv.deps.runner.jobs]
    assert [j.kind for j in jobs] == ["embed"] * 3
    assert [len(j.args["sha256s"]) for j in jobs] == [4, 4, 2] and {j.args["domain"] for j in jobs} == {"Compact"}
    cv.deps.runner.run_all()
    assert cv.deps.stats.images == 10
    it = cv.training.train(p.id)
    cv.deps.runner.run_all()
    assert _stored(cv, it).status == IterationStatus.Completed and cv.deps.stats.images == 10  # all cached
    cv.images.add(p.id, [ImageUpload(png_bytes(seed=3, size=(8, 8)), "", [])])  # a duplicate: nothing new to embed
    assert cv.deps.runner.jobs == []


def test_without_embed_chunks_uploads_queue_nothing(cv, p):
    _trainable(cv, p)
    assert cv.deps.runner.jobs == []


def test_restart_recovery_leaves_queued_work_to_a_durable_queue(cv, p):
    from core.usecases import recover
    from tests.fakes import ManualRunner

    _trainable(cv, p)
    it = cv.training.train(p.id)
    durable = ManualRunner()
    durable.durable = True  # jobs outlive the process: a worker elsewhere still runs this one
    cv.deps.runner = durable
    assert recover(cv.deps)["failed_iterations"] == 0
    assert _stored(cv, it).status == IterationStatus.Queued
    cv.deps.runner = ManualRunner()  # in-process jobs die with the process: recovery fails them
    assert recover(cv.deps)["failed_iterations"] == 1


def test_with_a_durable_queue_a_project_copy_s_images_are_a_job(cv, p):
    from tests.fakes import ManualRunner

    _trainable(cv, p)
    cv.deps.runner = durable = ManualRunner()
    durable.durable = True
    copy = cv.transfer.copy(p.id, "copied")
    assert [t.name for t in cv.tags.list(copy.id)] == ["a", "b"] and cv.images.count(copy.id) == 0
    [(job, _)] = durable.jobs
    assert job == Job("copy", {"source_id": p.id, "target_id": copy.id})
    run_job(cv.deps, job)
    run_job(cv.deps, job)  # run again (a worker died after committing): nothing is copied twice
    src = {i.sha256: sorted(cv.tags.get(p.id, t).name for t in i.tag_ids) for i in cv.images.list(p.id)}
    dst = {i.sha256: sorted(cv.tags.get(copy.id, t).name for t in i.tag_ids) for i in cv.images.list(copy.id)}
    assert dst == src and len(dst) == 10


def test_with_in_process_jobs_a_project_copy_is_complete_on_return(cv, p):
    _trainable(cv, p)
    copy = cv.transfer.copy(p.id, "copied")
    assert cv.images.count(copy.id) == 10 and cv.deps.runner.jobs == []


class _Unreachable:
    """A queue that cannot be reached (PostgreSQL down between the rows' commit and the enqueue)."""

    durable = True

    def submit(self, job, run):
        raise ConnectionError("queue unreachable")


def test_work_that_cannot_be_queued_is_not_left_waiting_for_nobody(cv, p):
    _trainable(cv, p)
    cv.deps.embed_chunk = 4
    cv.deps.runner = _Unreachable()
    ok = cv.images.add(p.id, [ImageUpload(png_bytes(seed=77, size=(8, 8)), "", [])])  # embedding ahead: optional
    assert [r.status for r in ok] == ["OK"]
    with pytest.raises(ConnectionError):
        cv.training.train(p.id)
    [it] = cv.iterations.list(p.id)
    assert it.status == IterationStatus.Failed and "could not be queued" in it.failure_reason
    with pytest.raises(ConnectionError):
        cv.transfer.copy(p.id, "copied")
    assert [x.name for x in cv.projects.list()] == ["jobs"]  # no copy without its images


def test_an_export_that_cannot_be_queued_is_failed(cv, p):
    _trainable(cv, p)
    cv.training.train(p.id)
    cv.deps.runner.run_all()
    [it] = cv.iterations.list(p.id)
    cv.deps.runner = _Unreachable()
    with pytest.raises(ConnectionError):
        cv.exports.start(p.id, it.id)
    [export] = cv.exports.list(p.id, it.id)
    assert export.status.value == "Failed" and "could not be queued" in export.failure_reason
