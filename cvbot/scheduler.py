"""Scheduled jobs in every `cvbot serve` process, with APScheduler; each run happens once across the install.

Every process fires every job at the same scheduled times (daily at a UTC time of day, or, for tests and
operators who want it, every CVBOT_SCHEDULE_INTERVAL seconds on a grid aligned to the epoch). A firing names its
slot (the scheduled time it is for) and the first process to record (job, slot) in the `job_runs` table runs it
(`core.usecases.run_once`); the others find the row and skip. The job bodies are core use cases
(`core.usecases.schedule.JOBS`), called by name."""
from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.model import JobRun
from core.usecases import JOBS, Deps, ScheduleSettings, run_once

from .config import time_of_day

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Daily:
    """Once a day at `hour`:`minute` UTC."""

    hour: int
    minute: int

    def slot(self, now: datetime) -> str:
        """The scheduled time a firing at `now` is for: today's, or yesterday's before today's time has come."""
        at = now.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        if at > now:
            at -= timedelta(days=1)
        return at.strftime("%Y-%m-%dT%H:%MZ")

    def trigger(self):
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger(hour=self.hour, minute=self.minute, timezone=UTC)


@dataclass(frozen=True)
class Every:
    """Every `seconds`, on a grid aligned to the epoch, so that every process fires at the same instants."""

    seconds: float

    def slot(self, now: datetime) -> str:
        """The grid instant a firing at `now` is for: the latest one not after now (a firing is never early, and
        one delayed by less than the interval still names its own slot)."""
        n = math.floor(now.timestamp() / self.seconds + 1e-6)
        return datetime.fromtimestamp(n * self.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def trigger(self):
        from apscheduler.triggers.interval import IntervalTrigger

        first = (int(time.time() // self.seconds) + 1) * self.seconds
        return IntervalTrigger(seconds=self.seconds, start_date=datetime.fromtimestamp(first, UTC), timezone=UTC)


Timing = Daily | Every


def parse_time_of_day(value: str, name: str) -> Daily:
    """"HH:MM" (UTC, 24-hour clock)."""
    return Daily(*time_of_day(value, name))


def owner_name() -> str:
    """Who runs a slot, as the run log shows it: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Scheduler:
    """APScheduler's background scheduler firing `timings` (job name → when); every firing goes through
    `run_once`. `on_run` (tests, metrics) hears each run this process made."""

    def __init__(self, deps: Deps, settings: ScheduleSettings, timings: dict[str, Timing],
                 owner: str | None = None, on_run: Callable[[JobRun], None] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        unknown = set(timings) - set(JOBS)
        if unknown:
            raise ValueError(f"no scheduled job named {sorted(unknown)[0]!r}; the jobs are {', '.join(JOBS)}")
        self.deps, self.settings, self.timings = deps, settings, timings
        self.owner = owner or owner_name()
        self.on_run = on_run
        self.clock = clock
        self.scheduler = None
        self._closed = False
        self._lock = threading.Lock()

    def fire(self, name: str) -> JobRun | None:
        """Run job `name` for the slot of now, unless another process has; the run, or None if skipped."""
        slot = self.timings[name].slot(self.clock())
        run = run_once(self.deps, name, slot, self.owner, lambda: JOBS[name](self.deps, self.settings))
        if run is None:
            log.debug("scheduled job %s (%s) already run by another process", name, slot)
            return None
        log.info("scheduled job %s (%s) ran in %s: %s %s", name, slot, self.owner, run.status.value, run.result)
        if self.on_run is not None:
            self.on_run(run)
        return run

    def start(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        with self._lock:
            if self.scheduler is not None or self._closed:
                return
            # one thread: the jobs of this process run one after the other (retraining only queues trainings);
            # a firing missed by up to an hour (a busy or suspended process) still runs, coalesced into one
            self.scheduler = BackgroundScheduler(
                executors={"default": ThreadPoolExecutor(1)}, timezone=UTC,
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600})
            for name, timing in self.timings.items():
                self.scheduler.add_job(self.fire, timing.trigger(), args=[name], id=f"schedule-{name}", name=name)
            self.scheduler.start()
        log.info("scheduled jobs: %s (each run once across every process of the install)",
                 ", ".join(f"{n} {describe(t)}" for n, t in self.timings.items()))

    def start_in_background(self) -> threading.Thread:
        """`start` on a thread of its own (APScheduler's import takes a moment the server need not wait for)."""
        thread = threading.Thread(target=self.start, name="scheduler-start", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            if self.scheduler is not None:
                self.scheduler.shutdown(wait=False)
                self.scheduler = None


def describe(timing: Timing) -> str:
    if isinstance(timing, Daily):
        return f"daily at {timing.hour:02d}:{timing.minute:02d} UTC"
    return f"every {timing.seconds:g} s"


def timings_from(retrain_at: Daily, cleanup_at: Daily, interval: float | None) -> dict[str, Timing]:
    """Retraining at `retrain_at`, prediction retention and store cleanup at `cleanup_at`; all of them every
    `interval` seconds instead when it is set."""
    if interval:
        every = Every(interval)
        return {name: every for name in JOBS}
    return {"retrain": retrain_at, "prediction-retention": cleanup_at, "store-cleanup": cleanup_at}
