"""Scheduled jobs' bodies and the rules they follow: nightly retraining of the projects that opted in and received
new images, stored-prediction retention, and store cleanup (orphan blobs, stale partial files, expired claims).

Every process of an install fires each job at the same scheduled times (the adapter, cvbot/scheduler.py); `run_once`
lets the first process to claim a (job, slot) run it and the others skip it, through a row in the run log. `claim_once`
is the same guarantee for single keys (a Slack event id redelivered to another web process)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .. import errors
from ..links import MAX_EDGES
from ..model import Image, Iteration, JobRun, JobRunStatus, Project, utcnow
from ..rules import RETRAIN_NIGHTLY
from .base import Deps, UseCase, collect_blobs
from .doctor import STALE_PARTIAL_SECONDS, delete_orphans
from .scope import Scope
from .training import Training

log = logging.getLogger(__name__)

DELETE_BATCH = 500


# ------------------------------------------------------------------ settings rules
def retention_days(project: Project, install_days: int | None) -> int | None:
    """How many days the project's stored predictions are kept; None: for ever. The project's own setting wins (0:
    for ever); without one the install's default applies (None or 0: for ever, so an upgrade deletes nothing)."""
    days = project.prediction_retention_days if project.prediction_retention_days is not None else install_days
    return days or None


def expired(created_at: datetime, now: datetime, days: int | None) -> bool:
    """Whether a stored prediction made at `created_at` is past a retention of `days` at `now`."""
    return days is not None and created_at < now - timedelta(days=days)


def needs_retraining(project: Project, iterations: list[Iteration], newest_image: Image | None) -> str | None:
    """Why the nightly retraining trains `project` (None: it does not): it opted in, nothing of it is training, and
    an image arrived after its last iteration was queued (or it has images and no iteration yet)."""
    if project.retrain != RETRAIN_NIGHTLY or newest_image is None:
        return None
    if any(it.status.running for it in iterations):
        return None
    if not iterations:
        return "images and no iteration yet"
    last = max(iterations, key=lambda it: it.created_at)
    if newest_image.created_at > last.created_at:
        return f"new images since iteration {last.number}"
    return None


# ------------------------------------------------------------------ once across processes
def claim_once(deps: Deps, key: str, ttl_seconds: float, now: datetime | None = None) -> bool:
    """True for the first caller, in any process of the install, to claim `key` within `ttl_seconds`."""
    now = now or utcnow()
    with deps.uow() as uow:
        taken = uow.claims.claim(key, now + timedelta(seconds=ttl_seconds), now)
        uow.commit()
    return taken


def run_once(deps: Deps, job: str, slot: str, owner: str, body: Callable[[], dict[str, Any]]) -> JobRun | None:
    """Run `body` for (job, slot) unless another process claimed that slot first (then None). The run log records
    who ran it, when, and its result or error; an error is logged and recorded, not raised."""
    run = JobRun(job=job, slot=slot, owner=owner)
    with deps.uow() as uow:
        if not uow.job_runs.start(run):
            return None
        uow.commit()
    try:
        run.result = body()
        run.status = JobRunStatus.Done
    except Exception as e:  # noqa: BLE001 - recorded in the run log; the next slot runs again
        log.exception("scheduled job %s (%s) failed", job, slot)
        run.status = JobRunStatus.Failed
        run.result = {"error": e.message if isinstance(e, errors.CvError) else f"{type(e).__name__}: {e}"}
    run.finished_at = utcnow()
    with deps.uow() as uow:
        uow.job_runs.finish(job, slot, run.status, run.result, run.finished_at)
        uow.commit()
    return run


# ------------------------------------------------------------------ the jobs
@dataclass
class ScheduleSettings:
    """What the jobs need from the install's configuration."""

    prediction_retention_days: int | None = None  # the install's default; None: keep for ever
    orphan_grace_seconds: float = 3600.0  # an orphan blob is deleted once found unreferenced this long


class Schedule(UseCase):
    """The jobs' bodies, across every workspace (the system scope)."""

    def __init__(self, deps: Deps, scope: Scope | None = None):
        super().__init__(deps, scope or Scope.system())

    def runs(self, job: str | None = None, limit: int = 50) -> list[JobRun]:
        """The run log, newest first."""
        with self.deps.uow() as uow:
            return uow.job_runs.list(job, limit)

    def retrain(self) -> dict[str, Any]:
        """Queue a training of every project that opted in to nightly retraining and received new images since its
        last iteration; a project that cannot train (too few images, nothing changed) is skipped with the reason."""
        with self.deps.uow() as uow:
            projects = [p for p in uow.projects.list() if p.retrain == RETRAIN_NIGHTLY and self.scope.sees(p)]
            due = []
            for p in projects:
                newest = uow.images.list(p.id, take=1)
                why = needs_retraining(p, uow.iterations.list(p.id), newest[0] if newest else None)
                if why:
                    due.append((p, why))
        started: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        training = Training(self.deps, self.scope)
        for p, why in due:
            try:
                it = training.train(p.id)
            except errors.CvError as e:  # not enough images, nothing changed, training meanwhile, deleted
                skipped.append({"project": p.id, "name": p.name, "reason": e.message})
                continue
            log.info("nightly retraining of project '%s' (%s): iteration %d queued", p.name, why, it.number)
            started.append({"project": p.id, "name": p.name, "iteration": it.id, "number": it.number})
        return {"projects": len(projects), "started": started, "skipped": skipped}

    def expire_predictions(self, install_days: int | None, now: datetime | None = None) -> dict[str, Any]:
        """Delete the stored predictions past their project's retention, with their images (blobs no other row
        references)."""
        now = now or utcnow()
        with self.deps.uow() as uow:
            projects = [p for p in uow.projects.list() if self.scope.sees(p)]
        deleted, touched = 0, 0
        for p in projects:
            days = retention_days(p, install_days)
            if days is None:
                continue
            cutoff = now - timedelta(days=days)
            gone = 0
            while True:
                with self.deps.uow() as uow:
                    batch = uow.predictions.older_than(p.id, cutoff, DELETE_BATCH)
                    for pred in batch:
                        uow.predictions.delete(pred.id)
                    images = [pred.sha256 for pred in batch if pred.sha256]
                    copies = [k for sha in images for v in MAX_EDGES if (k := uow.variants.get(sha, v))]
                    uow.commit()
                # the images and their resized copies, unless another row still uses them
                collect_blobs(self.deps, images + copies)
                gone += len(batch)
                if len(batch) < DELETE_BATCH:
                    break
            if gone:
                touched += 1
                log.info("deleted %d stored prediction(s) of project '%s' older than %d days", gone, p.name, days)
            deleted += gone
        return {"predictions_deleted": deleted, "projects": touched}

    def clean_store(self, grace_seconds: float, now: datetime | None = None) -> dict[str, Any]:
        """Delete blobs found unreferenced by an earlier run at least `grace_seconds` ago and still unreferenced
        (a younger orphan may be an upload whose row is not committed yet, in any process), partial blob files
        untouched for STALE_PARTIAL_SECONDS, and expired claims."""
        now = now or utcnow()
        keys = set(self.deps.blobs.keys())
        with self.deps.uow() as uow:
            unreferenced = keys - uow.referenced_blob_keys(keys)
            marked = uow.orphans.marked()
        due = sorted(k for k in unreferenced if k in marked and (now - marked[k]).total_seconds() >= grace_seconds)
        # asks again which are referenced right before deleting; on a shared store (S3), whose `put` of content
        # already stored makes the blob young again, also that nobody wrote it within the grace period
        deleted = delete_orphans(self.deps, due, min_age=grace_seconds if self.deps.blobs.shared else 0.0)
        partials = 0
        for pf in self.deps.blobs.partial_files(older_than=STALE_PARTIAL_SECONDS):
            self.deps.blobs.delete_partial(pf.name)
            partials += 1
        with self.deps.uow() as uow:
            uow.orphans.forget(sorted((set(marked) - unreferenced) | set(due)))
            uow.orphans.mark(sorted(unreferenced - set(marked)), now)
            claims = uow.claims.purge(now)
            uow.commit()
        return {"orphan_blobs_deleted": deleted, "orphan_blobs_waiting": len(unreferenced) - len(due),
                "stale_partial_files_deleted": partials, "expired_claims_deleted": claims}


# The jobs by name (the scheduler and a queue can call them alike): each takes the Deps and the settings.
JOBS: dict[str, Callable[[Deps, ScheduleSettings], dict[str, Any]]] = {
    "retrain": lambda deps, s: Schedule(deps).retrain(),
    "prediction-retention": lambda deps, s: Schedule(deps).expire_predictions(s.prediction_retention_days),
    "store-cleanup": lambda deps, s: Schedule(deps).clean_store(s.orphan_grace_seconds),
}
