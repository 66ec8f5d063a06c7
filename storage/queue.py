"""Jobs in PostgreSQL through procrastinate (https://procrastinate.readthedocs.io): the durable `JobRunner` a web
process enqueues with, and the pieces a worker needs (the task name, the heartbeat and stalled-job settings, the
lease table that names the worker holding each running job).

Schema: procrastinate's tables and functions are created by cvbot's own migration path (Alembic revision 0011,
on PostgreSQL only, from `schema_sql()`), so `cvbot serve`, `cvbot worker` and every CLI command migrate the
same way and N processes starting at once migrate once. procrastinate is pinned to one minor version in
pyproject.toml: its schema is frozen in revision 0011, and a later upgrade of procrastinate needs a cvbot revision
that applies procrastinate's own migration files for that version.

Failure model: a worker sends a heartbeat every HEARTBEAT_SECONDS; every worker checks every RESCUE_SECONDS for
jobs left `doing` by a worker whose heartbeat is older than STALLED_SECONDS (killed, frozen, cut off) and hands
them back to the queue, so another worker retries them, within STALLED_SECONDS + RESCUE_SECONDS + the fetch of a
kill. Jobs are written to be run again safely (core/usecases/jobs.py)."""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from core.ports import Job, JobRunner

log = logging.getLogger(__name__)

TASK = "cvbot.job"
QUEUE = "cvbot"
HEARTBEAT_SECONDS = 2.0
STALLED_SECONDS = 10.0
RESCUE_SECONDS = 3.0
LEASES = "cvbot_job_leases"

LEASES_DDL = f"""
CREATE TABLE {LEASES} (
    job_id bigint PRIMARY KEY,
    kind varchar(32) NOT NULL,
    args jsonb NOT NULL,
    worker_id bigint,
    worker varchar(300) NOT NULL,
    host varchar(255) NOT NULL,
    pid integer NOT NULL,
    started_at timestamp with time zone NOT NULL DEFAULT NOW()
)
"""


def is_postgres(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "postgresql"


def conninfo(database_url: str) -> str:
    """libpq's form of a SQLAlchemy URL (`postgresql+psycopg://` -> `postgresql://`), for procrastinate's pool."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def schema_sql() -> str:
    """procrastinate's schema (of the installed, pinned version)."""
    from procrastinate.schema import SchemaManager

    return SchemaManager.get_schema()


def worker_name() -> str:
    """How a worker process is named in leases and logs: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Leases:
    """`cvbot_job_leases`: which worker process (host, pid, procrastinate's worker id) holds each running job. The
    row is written when a worker starts a job (a retry overwrites the dead worker's) and deleted when it ends."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def take(self, job_id: int, job: Job, worker_id: int | None) -> None:
        with self.engine.begin() as c:
            c.execute(text(
                f"INSERT INTO {LEASES} (job_id, kind, args, worker_id, worker, host, pid, started_at) "
                "VALUES (:id, :kind, CAST(:args AS jsonb), :wid, :worker, :host, :pid, NOW()) "
                "ON CONFLICT (job_id) DO UPDATE SET worker_id = EXCLUDED.worker_id, worker = EXCLUDED.worker, "
                "host = EXCLUDED.host, pid = EXCLUDED.pid, started_at = EXCLUDED.started_at"),
                {"id": job_id, "kind": job.kind, "args": json.dumps(job.args), "wid": worker_id,
                 "worker": worker_name(), "host": socket.gethostname(), "pid": os.getpid()})

    def release(self, job_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(text(f"DELETE FROM {LEASES} WHERE job_id = :id"), {"id": job_id})

    def held(self) -> list[dict[str, Any]]:
        """Every lease of a job still running (`doing`), oldest first."""
        with self.engine.connect() as c:
            rows = c.execute(text(
                f"SELECT l.job_id, l.kind, l.args, l.worker_id, l.worker, l.host, l.pid, l.started_at FROM {LEASES} l "
                "JOIN procrastinate_jobs j ON j.id = l.job_id WHERE j.status = 'doing' ORDER BY l.started_at"))
            return [dict(r._mapping) for r in rows]


class QueueRunner(JobRunner):
    """Enqueues jobs in PostgreSQL for `cvbot worker` (or the worker inside `cvbot serve`). A job equal to one
    still waiting (same kind and arguments) is not queued twice (procrastinate's queueing lock)."""

    durable = True

    def __init__(self, database_url: str):
        self.database_url = database_url
        self._app: Any = None
        self._lock = threading.Lock()

    def _opened(self) -> Any:
        with self._lock:
            if self._app is None:
                import procrastinate

                connector = procrastinate.SyncPsycopgConnector(conninfo=conninfo(self.database_url), min_size=1,
                                                               max_size=4)
                self._app = procrastinate.App(connector=connector).open()
            return self._app

    def submit(self, job: Job, run: Any) -> None:
        from procrastinate.exceptions import AlreadyEnqueued

        try:
            job_id = self._opened().configure_task(TASK, queue=QUEUE, queueing_lock=job.id).defer(
                kind=job.kind, args=job.args)
            log.debug("queued %s as job %s", job.id, job_id)
        except AlreadyEnqueued:
            log.info("%s is already queued", job.id)

    def close(self) -> None:
        with self._lock:
            if self._app is not None:
                self._app.close()
                self._app = None
