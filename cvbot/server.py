"""`cvbot serve`: one aiohttp server for the health check, the HTTP API and Slack's events."""
from __future__ import annotations

import asyncio
import importlib
import logging
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from core import errors

from .bootstrap import Container, bootstrap
from .config import Settings

log = logging.getLogger(__name__)

CONTAINER = web.AppKey("container", Container)
ADAPTERS = ("api", "bot")  # packages beside core/ that expose setup(app, container)
# where an adapter's setup lists callables to hear of each scheduled run this process made (JobRun)
SCHEDULED_RUN_LISTENERS = "scheduled_run_listeners"


async def healthz(request: web.Request) -> web.Response:
    c = request.app[CONTAINER]
    loaded = sorted(b.id for b in c.deps.backbones.loaded().values())
    uptime = round(time.monotonic() - request.app["started"], 1)
    return web.json_response({"status": "ok", "backbones": loaded, "uptimeSeconds": uptime})


class BadRequestLog(logging.LoggerAdapter):
    """aiohttp's low-level server logs a request it cannot parse (an over-long request line or header, broken
    framing) at ERROR with a traceback. That is the client's doing: one WARNING line, with nothing the client sent
    (a cut-off header could hold a key)."""

    def exception(self, msg, *args, exc_info=True, **kwargs):
        if isinstance(exc_info, HttpProcessingError):
            remote = args[0] if args else "?"
            self.logger.warning("refused a malformed request from %s: %s (%s)", remote, type(exc_info).__name__,
                                exc_info.code)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


def build_app(container: Container) -> web.Application:
    # Custom Vision's SDK puts up to 256 GUIDs in one query string (imageIds): ~10 kB, over aiohttp's 8 kB default.
    # client_max_size is the ceiling for any route; each API operation reads at most its own limit (api/http.py).
    app = web.Application(client_max_size=64 * 1024 * 1024,
                          handler_args={"max_line_size": 65536, "max_field_size": 65536,
                                        "logger": BadRequestLog(logging.getLogger("aiohttp.server"), {})})
    app[CONTAINER] = container
    app["started"] = time.monotonic()
    app.router.add_get("/healthz", healthz)
    for name in ADAPTERS:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            log.info("adapter %s not available: %s", name, e)
            continue
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(app, container)

    async def on_cleanup(_app):
        container.close()

    app.on_cleanup.append(on_cleanup)
    return app


def warm_up(container: Container) -> None:
    """Load the default domain's backbone before answering health checks, so the first prediction is fast."""
    try:
        container.deps.backbones.for_domain(container.settings.default_domain)
    except Exception as e:  # noqa: BLE001 - a missing model must not stop the server; the error is reported per request
        log.warning("could not preload the %s backbone: %s", container.settings.default_domain.value, e)


def serve(settings: Settings, host: str | None = None, port: int | None = None, jobs: bool | None = None) -> None:
    """The web process. SQLite: jobs run in this process's thread pool, as always. PostgreSQL: jobs go to the
    queue, and unless `jobs` is False (`--no-jobs`, `CVBOT_JOBS=off`) a worker thread here runs them too, so one
    process still trains; with workers elsewhere, run the web processes with --no-jobs."""
    run_jobs = settings.jobs if jobs is None else jobs
    if not settings.uses_postgres and not run_jobs:
        raise errors.InvalidInput("--no-jobs / CVBOT_JOBS=off needs PostgreSQL and `cvbot worker` processes; with "
                                  "SQLite, cvbot serve runs every job itself (remove the option)")
    container = bootstrap(settings, jobs="queue" if settings.uses_postgres else "local")
    worker = None
    if settings.uses_postgres:
        from .worker import quiet_procrastinate

        quiet_procrastinate(settings.log_level)
    if settings.uses_postgres and run_jobs:
        from .worker import WorkerThread

        worker = WorkerThread(container).start()
    warm_up(container)
    app = build_app(container)
    if settings.scheduled_jobs:
        add_scheduler(app, container)
    if worker is not None:
        async def stop_worker(_app):
            await asyncio.get_running_loop().run_in_executor(None, worker.stop)

        app.on_shutdown.append(stop_worker)
    mode = ("jobs in this process" if not settings.uses_postgres else
            "jobs queued in PostgreSQL" + (" and run here too" if worker else " for cvbot worker processes"))
    log.info("cvbot: %s", mode)
    host = host or settings.host
    port = port if port is not None else settings.port
    log.info("cvbot serving on http://%s:%s (data in %s)", host, port, settings.data_dir)
    web.run_app(app, host=host, port=port, print=None, handle_signals=True,
                access_log=None if settings.log_level.upper() != "DEBUG" else log)


def add_scheduler(app: web.Application, container: Container):
    """Scheduled jobs (cvbot/scheduler.py) from the server's start to its cleanup; every process runs the scheduler,
    and each run happens in one of them."""
    from .scheduler import Scheduler, parse_time_of_day, timings_from

    s = container.settings
    timings = timings_from(parse_time_of_day(s.retrain_at, "CVBOT_RETRAIN_AT"),
                           parse_time_of_day(s.cleanup_at, "CVBOT_CLEANUP_AT"), s.schedule_interval)
    listeners = app.get(SCHEDULED_RUN_LISTENERS, [])  # e.g. the Slack adapter announces nightly trainings

    def on_run(run) -> None:
        for listener in listeners:
            try:
                listener(run)
            except Exception:  # noqa: BLE001 - an adapter's failure must not stop the scheduler
                log.exception("a listener of scheduled runs failed")

    scheduler = Scheduler(container.deps, s.schedule_settings(), timings, on_run=on_run)

    async def start(_app) -> None:
        scheduler.start_in_background()  # /healthz need not wait for APScheduler's import

    async def stop(_app) -> None:
        scheduler.shutdown()

    app.on_startup.append(start)
    app.on_cleanup.insert(0, stop)  # before the container closes
    return scheduler


async def run_in_thread(fn, *args, **kwargs):
    """Run blocking service calls off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))
