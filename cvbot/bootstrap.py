"""The composition root: the one place that wires adapters to the core."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from core.backbones import BackboneProvider
from core.ports import JobRunner
from core.usecases import Deps, Scope, UseCases
from core.usecases import recover as recover_after_restart
from storage import LocalBlobStore, make_engine, migrate, unit_of_work_factory

from .config import Settings

log = logging.getLogger(__name__)


class SchedulerRunner(JobRunner):
    """Training jobs on APScheduler's background scheduler, one at a time (the CPU is the limit).

    The scheduler (and APScheduler's import, about 0.2 s) starts with the first job: most CLI commands
    submit none."""

    def __init__(self, workers: int = 1):
        self.workers = workers
        self.scheduler = None
        self._lock = threading.Lock()

    def _started(self):
        with self._lock:
            if self.scheduler is None:
                from apscheduler.executors.pool import ThreadPoolExecutor
                from apscheduler.schedulers.background import BackgroundScheduler

                self.scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(self.workers)},
                                                     job_defaults={"misfire_grace_time": None, "coalesce": False})
                self.scheduler.start()
            return self.scheduler

    def submit(self, job_id: str, fn: Callable[[], None]) -> None:
        self._started().add_job(fn, id=job_id, name=f"train {job_id}")

    def shutdown(self) -> None:
        with self._lock:
            if self.scheduler is not None:
                self.scheduler.shutdown(wait=False)


@dataclass
class Container:
    settings: Settings
    deps: Deps
    runner: JobRunner

    def usecases(self, scope: Scope) -> UseCases:
        """The use cases for one caller (adapters build one per request, message or command)."""
        return UseCases(self.deps, scope)

    def close(self) -> None:
        if isinstance(self.runner, SchedulerRunner):
            self.runner.shutdown()


def bootstrap(settings: Settings | None = None, recover: bool = True) -> Container:
    settings = settings or Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    migrate(engine)
    runner = SchedulerRunner()
    deps = Deps(unit_of_work_factory(engine), LocalBlobStore(settings.data_dir / "blobs"),
                BackboneProvider(settings.backbone_settings()), runner)
    if recover:
        report = recover_after_restart(deps)
        if any(report.values()):
            log.warning("recovered after restart: %s", report)
    return Container(settings, deps, runner)
