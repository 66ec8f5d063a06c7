"""`cvbot worker`: takes jobs (training, export, embedding) from the PostgreSQL queue (storage/queue.py) and runs
them with the same `Deps` as the web process. `cvbot serve` on PostgreSQL runs one of these in a thread too, unless
told not to (`--no-jobs`, `CVBOT_JOBS=off`).

One job at a time per worker (jobs are CPU-bound; start more workers, one per machine or core budget). SIGTERM or
SIGINT: the worker takes no new job, finishes the one it runs, then exits; a second signal stops it at once, and
the job it held is handed to another worker by the stalled-job rescue (storage/queue.py)."""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from core.ports import Job
from core.usecases.jobs import run_job
from storage import make_engine
from storage.queue import (
    HEARTBEAT_SECONDS,
    QUEUE,
    RESCUE_SECONDS,
    STALLED_SECONDS,
    TASK,
    Leases,
    conninfo,
    worker_name,
)

from .bootstrap import Container

log = logging.getLogger(__name__)


def make_worker_app(container: Container, delete_jobs: str = "successful") -> tuple[Any, dict[str, Any]]:
    """procrastinate's App with cvbot's one task registered, and the worker options."""
    import procrastinate

    settings = container.settings
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=conninfo(settings.database_url), min_size=1, max_size=4))
    leases = Leases(make_engine(settings.database_url))
    deps = container.deps

    @app.task(name=TASK, queue=QUEUE, pass_context=True,
              retry=procrastinate.RetryStrategy(max_attempts=3, wait=5))
    def cvbot_job(context: Any, kind: str, args: dict[str, Any]) -> None:
        job = Job(kind, args)
        leases.take(context.job.id, job, context.job.worker_id)
        try:
            log.info("job %s (%s) started by %s", context.job.id, job.id, worker_name())
            run_job(deps, job)
        finally:
            leases.release(context.job.id)

    options = {"queues": [QUEUE], "name": worker_name(), "concurrency": 1, "delete_jobs": delete_jobs,
               "update_heartbeat_interval": HEARTBEAT_SECONDS, "stalled_worker_timeout": STALLED_SECONDS,
               "fetch_job_polling_interval": 1.0, "abort_job_polling_interval": 5.0}
    return app, options


async def rescue_stalled(app: Any, every: float = RESCUE_SECONDS) -> None:
    """Hand back to the queue the jobs of workers whose heartbeat stopped (killed, frozen, cut off)."""
    manager = app.job_manager
    while True:
        try:
            for job in await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=STALLED_SECONDS):
                try:
                    await manager.retry_job(job)
                    log.warning("job %s (%s) was held by a worker that stopped answering; queued again",
                                job.id, job.task_kwargs.get("kind"))
                except Exception as e:  # noqa: BLE001 - another worker handed it back first
                    log.debug("job %s: %s", job.id, e)
            await manager.prune_stalled_workers(STALLED_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a lost connection must not end the rescue; it retries next round
            log.exception("checking for stalled jobs failed")
        await asyncio.sleep(every)


async def work(container: Container, install_signal_handlers: bool = True, delete_jobs: str = "successful",
               stop: asyncio.Event | None = None) -> None:
    """Run a worker until it is stopped (a signal, or `stop` set)."""
    app, options = make_worker_app(container, delete_jobs)
    async with app.open_async():
        worker = asyncio.create_task(app.run_worker_async(install_signal_handlers=install_signal_handlers,
                                                          **options))
        rescue = asyncio.create_task(rescue_stalled(app))
        waiters: set[asyncio.Task[Any]] = {worker}
        if stop is not None:
            waiters.add(asyncio.create_task(stop.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            rescue.cancel()
            if not worker.done():
                worker.cancel()  # procrastinate's graceful stop: no new job, the running one finishes
            for t in waiters - {worker}:
                t.cancel()
            await asyncio.gather(worker, rescue, return_exceptions=True)
        if not worker.cancelled() and worker.exception() is not None:
            raise worker.exception()  # e.g. the database refused: exit with the error, not 0


def quiet_procrastinate(level: str) -> None:
    """procrastinate logs every job's arguments at INFO (lists of hashes for embedding jobs): warnings only,
    unless cvbot itself logs at DEBUG."""
    if level.upper() != "DEBUG":
        logging.getLogger("procrastinate").setLevel(logging.WARNING)


def run_worker(container: Container) -> None:
    """`cvbot worker`: the worker in the foreground (SIGTERM / SIGINT stop it gracefully)."""
    quiet_procrastinate(container.settings.log_level)
    log.info("cvbot worker %s taking jobs from queue %r", worker_name(), QUEUE)
    asyncio.run(work(container))


class WorkerThread:
    """A worker inside `cvbot serve` (PostgreSQL without --no-jobs): its own event loop on a daemon thread."""

    def __init__(self, container: Container, delete_jobs: str = "successful"):
        self.container = container
        self.delete_jobs = delete_jobs
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="cvbot-worker", daemon=True)

    def start(self) -> WorkerThread:
        quiet_procrastinate(self.container.settings.log_level)
        self.thread.start()
        self.ready.wait(10)
        return self

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            self.ready.set()
            await work(self.container, install_signal_handlers=False, delete_jobs=self.delete_jobs,
                       stop=self.stop_event)

        try:
            asyncio.run(main())
        except Exception:  # noqa: BLE001 - the web process keeps serving; jobs wait for another worker
            log.exception("the worker inside this server stopped")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to stop (a running job may finish within `timeout`; if not, the process exits without
        it and another worker takes the job over once its heartbeat is stale)."""
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout)
