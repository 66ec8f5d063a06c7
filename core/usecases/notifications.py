"""Where adapters announce a training's outcome (e.g. the Slack progress message), kept with the iteration so
that the outcome is still announced after a restart; `unreported` lists what is left to tell."""
from __future__ import annotations

from typing import Any

from ..model import Iteration, IterationStatus, utcnow
from .base import UseCase


class Notifications(UseCase):
    def set_target(self, project_id: str, iteration_id: str, adapter: str, target: dict[str, Any] | None) -> Iteration:
        """Record (or, with None, forget) `adapter`'s opaque target for announcing the iteration's outcome."""
        with self.deps.uow() as uow:
            it = self.iteration(uow, project_id, iteration_id)
            notify = {k: v for k, v in {**(it.notify or {}), adapter: target}.items() if v is not None}
            uow.iterations.set_notify(it.id, notify or None)
            uow.commit()
            it.notify = notify or None
            return it

    def unreported(self, adapter: str, include_running: bool = False) -> list[Iteration]:
        """Finished (Completed or Failed) iterations with a target of `adapter` whose outcome is not reported yet,
        oldest first; with `include_running`, also the Queued and Training ones."""
        statuses = [IterationStatus.Completed, IterationStatus.Failed]
        if include_running:
            statuses += [IterationStatus.Queued, IterationStatus.Training]
        with self.deps.uow() as uow:
            found = [it for it in uow.iterations.unreported(statuses) if adapter in (it.notify or {})]
            if self.scope.workspace is None:
                return found
            return [it for it in found if (p := uow.projects.get(it.project_id)) is not None and self.scope.sees(p)]

    def mark_reported(self, project_id: str, iteration_id: str) -> None:
        """The iteration's final outcome was announced; an iteration deleted meanwhile is ignored."""
        with self.deps.uow() as uow:
            it = uow.iterations.get(iteration_id)
            if it is not None and it.project_id == project_id:
                self.project(uow, project_id)
                uow.iterations.set_reported(iteration_id, utcnow())
                uow.commit()
