"""The composition root: the one place that wires adapters to the core."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from core import errors
from core.backbones import BackboneProvider
from core.ports import BlobStore, Job, JobRunner
from core.usecases import Deps, Scope, UseCases
from core.usecases import recover as recover_after_restart
from storage import LocalBlobStore, StoreLock, make_engine, migrate, unit_of_work_factory

from .config import Settings

log = logging.getLogger(__name__)


class SchedulerRunner(JobRunner):
    """Jobs on APScheduler's background scheduler in this process, one at a time (the CPU is the limit): SQLite
    installs and CLI commands.

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

    def submit(self, job: Job, run: Callable[[], None]) -> None:
        self._started().add_job(run, id=job.id, name=job.id)

    def shutdown(self) -> None:
        with self._lock:
            if self.scheduler is not None:
                self.scheduler.shutdown(wait=False)


STARTUP_WAIT = 30.0  # seconds a starting process waits for another one's start-up recovery (exclusive hold)


@dataclass
class Container:
    settings: Settings
    deps: Deps
    runner: JobRunner
    lock: StoreLock | None = None

    def usecases(self, scope: Scope) -> UseCases:
        """The use cases for one caller (adapters build one per request, message or command)."""
        return UseCases(self.deps, scope)

    def close(self) -> None:
        if isinstance(self.runner, SchedulerRunner):
            self.runner.shutdown()
        closer = getattr(self.runner, "close", None)
        if closer is not None:
            closer()
        if self.lock is not None:
            self.lock.release()


def _lock_store(settings: Settings, mode: str) -> StoreLock:
    """The store's lock (storage/lock.py) in `mode`: "shared", "exclusive" (refused with StoreBusy while another
    process uses the store) or "prefer-exclusive" (exclusive if free, else shared; see `lock.exclusive`)."""
    lock = StoreLock(settings.data_dir)
    if mode in ("exclusive", "prefer-exclusive") and lock.try_exclusive():
        return lock
    if mode == "exclusive":
        lock.release()
        raise errors.StoreBusy(f"another cvbot process (a server or a command) uses the store in {settings.data_dir}; "
                               "stop it, then run this again")
    # several processes starting at once: the one doing its start-up recovery holds the lock exclusive briefly
    lock.share(wait=STARTUP_WAIT)
    return lock


def make_blob_store(settings: Settings, check: bool = True) -> BlobStore:
    """The blob store `settings` name: an S3 bucket for CVBOT_BLOB_URL (checked now, so a missing bucket, an
    unreachable endpoint or refused credentials stop the start with what to change), else the data directory."""
    if not settings.blob_url:
        return LocalBlobStore(settings.data_dir / "blobs")
    from storage.s3blobs import S3BlobStore, S3Options

    store = S3BlobStore(settings.blob_url, options=S3Options(
        endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
        access_key_id=settings.aws_access_key_id, secret_access_key=settings.aws_secret_access_key,
        session_token=settings.aws_session_token, addressing_style=settings.s3_addressing_style))
    if check:
        store.check()
    log.info("blobs in %r", store)
    return store


def make_runner(settings: Settings, jobs: str) -> JobRunner:
    """Where jobs go. "local": APScheduler's thread pool in this process (SQLite, CLI commands). "queue": the
    PostgreSQL queue that `cvbot worker` (and `cvbot serve` unless --no-jobs) take jobs from; refused on SQLite."""
    if jobs == "local":
        return SchedulerRunner()
    if not settings.uses_postgres:
        raise errors.InvalidInput("the job queue needs PostgreSQL (DATABASE_URL=postgresql+psycopg://...); with "
                                  "SQLite, cvbot serve runs every job itself")
    from storage.queue import QueueRunner

    return QueueRunner(settings.database_url)


def bootstrap(settings: Settings | None = None, recover: bool = True, lock: str = "shared",
              jobs: str = "local") -> Container:
    """Wire the adapters. With `recover` (the server), start-up recovery runs first, deleting orphan blobs and
    stale partial files only when no other process uses the store; the store's lock is then held in `lock` mode
    until `close`. `jobs`: see `make_runner`."""
    settings = settings or Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    store_lock = _lock_store(settings, "prefer-exclusive" if recover and lock == "shared" else lock)
    try:
        engine = make_engine(settings.database_url)
        migrate(engine)
        runner = make_runner(settings, jobs)
        blobs = make_blob_store(settings)
        deps = Deps(unit_of_work_factory(engine), blobs, BackboneProvider(settings.backbone_settings()), runner,
                    export_settings=settings.export_settings(),
                    embed_chunk=settings.embed_chunk if runner.durable else 0)
        if recover:
            # a shared store (S3) is written from other machines too, which the lock cannot see: its orphans are
            # collected by age instead (core.usecases.maintenance.recover)
            alone = store_lock.exclusive
            report = recover_after_restart(deps, clean_blobs=alone or blobs.shared)
            if any(report.values()):
                log.warning("recovered after restart: %s", report)
            if not alone and not blobs.shared:
                log.info("another cvbot process uses the store: orphan blobs and partial files are left alone")
            if lock == "shared":
                store_lock.share()
    except BaseException:
        store_lock.release()
        raise
    return Container(settings, deps, runner, store_lock)
