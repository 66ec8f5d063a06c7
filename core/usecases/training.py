"""Training: check Custom Vision's rules, queue an iteration, follow it until it is Completed or Failed."""
from __future__ import annotations

import time

from .. import errors
from ..model import Iteration, IterationStatus
from ..training import plan_training
from .base import UseCase


class Training(UseCase):
    def train(self, project_id: str, force: bool = False) -> Iteration:
        """Validate and queue a training; returns the Queued iteration (see `wait`)."""
        self.scope.require_write("train")
        with self.deps.train_lock, self.deps.uow() as uow:
            project = self.project(uow, project_id)
            # the number first: advancing the counter write-locks the project's row until this transaction ends, so
            # a training queued by another process at the same moment is seen by the check below (train_lock only
            # orders this process's threads); a refusal rolls the counter back
            number = uow.iterations.next_number(project_id)
            if uow.iterations.in_status([IterationStatus.Queued, IterationStatus.Training], project_id):
                raise errors.TrainingInProgress(f"project '{project.name}' is already training")
            plan = plan_training(uow.tags.list(project_id), uow.images.snapshot(project_id),
                                 project.domain, project.classification_type)
            if not force:
                done = [i for i in uow.iterations.list(project_id) if i.status == IterationStatus.Completed]
                if done and done[-1].fingerprint == plan.fingerprint:
                    raise errors.TrainingNotNeeded(
                        f"nothing changed since iteration {done[-1].number}; "
                        "add or retag images, or force the training")
            it = Iteration(
                project_id=project_id, number=number, name=f"Iteration {number}", domain=project.domain,
                classification_type=project.classification_type, backbone_id="", fingerprint=plan.fingerprint,
                snapshot=plan.entries, tag_ids=[t.id for t in plan.tags], tag_names=[t.name for t in plan.tags],
                tag_types=[t.type for t in plan.tags], performance={"warnings": plan.warnings},
            )
            uow.iterations.add(it)
            uow.commit()
        self.deps.progress.start(it.id)
        try:
            self.deps.submit("train", iteration_id=it.id)
        except Exception as e:  # the queue is unreachable: a Queued iteration no job will run must not stay
            with self.deps.uow() as uow:
                stored = uow.iterations.get(it.id)
                if stored is not None:
                    stored.status = IterationStatus.Failed
                    stored.failure_reason = f"the training could not be queued: {type(e).__name__}: {e}"
                    if uow.iterations.update_if(stored, [IterationStatus.Queued]):
                        uow.commit()
            self.deps.progress.finish(it.id, "failed")
            raise
        return it

    def wait(self, project_id: str, iteration_id: str, timeout: float | None = None) -> Iteration:
        """The iteration once Completed or Failed, or as it is when `timeout` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.deps.uow() as uow:
                it = self.iteration(uow, project_id, iteration_id)
            if not it.status.running:
                return it
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return it
            self.deps.progress.wait(iteration_id, min(0.5, left) if left is not None else 0.5)
