"""Engine, migrations and the SQLAlchemy unit of work."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.ports import UnitOfWork

from .blobs import storage_full
from .repositories import (
    SqlChannels,
    SqlClaims,
    SqlDecisions,
    SqlEmbeddings,
    SqlExports,
    SqlImages,
    SqlIterations,
    SqlJobRuns,
    SqlKeys,
    SqlMessages,
    SqlMigrated,
    SqlOrphans,
    SqlPredictions,
    SqlProjects,
    SqlSecrets,
    SqlTags,
    SqlVariants,
    referenced_keys,
)

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions, so that start-up can tell an up-to-date database with one query
# instead of loading Alembic (tests/unit/test_schema_head.py checks it against Alembic's own head).
HEAD_REVISION = "0013"


SQLITE_FULL = 13
PG_DISK_FULL = "53100"


def _disk_full(exc: BaseException | None) -> bool:
    """Whether a DBAPI error means the database has no room: SQLite's SQLITE_FULL, PostgreSQL's disk_full."""
    if exc is None:
        return False
    if getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "database or disk is full" in str(exc):
        return True
    return getattr(exc, "sqlstate", None) == PG_DISK_FULL


def _storage_full_errors(engine: Engine) -> None:
    """A write the database has no room for raises `errors.StorageFull` (logged once) instead of a driver error
    the adapters would answer as an unknown 500; the transaction is rolled back as for any error."""

    @event.listens_for(engine, "handle_error")
    def _full(ctx) -> None:
        if _disk_full(ctx.original_exception):
            raise storage_full("a database write", engine.url.render_as_string(hide_password=True),
                               ctx.original_exception) from ctx.sqlalchemy_exception


def make_engine(url: str) -> Engine:
    engine = _make_engine(url)
    _storage_full_errors(engine)
    return engine


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def schema_revisions(engine: Engine) -> set[str]:
    """The revisions recorded in the database's alembic_version table (empty for a database never migrated)."""
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
    except SQLAlchemyError:  # no such table: a new database (the connection's transaction is rolled back)
        return set()


# The key of the PostgreSQL advisory lock migrations take (any constant shared by every cvbot process; "cvbot" in
# ASCII), so that N processes starting at once on a new or older database migrate it once.
MIGRATION_LOCK = 0x6376626F74
SQLITE_LOCKED_RETRY_S = 60.0


def migrate(engine: Engine, force: bool = False) -> bool:
    """Bring the schema to the newest revision (every head) unless it is there already; True if Alembic ran.

    An up-to-date database costs one query; Alembic runs for a new or older database (and for an unknown
    revision, which it refuses), or always with `force`. Alembic runs under a database-wide lock (see `upgrade`):
    processes that start together wait for the first, then find the schema current and change nothing."""
    if not force and schema_revisions(engine) == {HEAD_REVISION}:
        return False
    deadline = time.monotonic() + SQLITE_LOCKED_RETRY_S
    while True:
        try:
            upgrade(engine, "heads")
            return True
        except OperationalError as e:
            # SQLite answers "locked" without waiting where waiting could deadlock (e.g. several connections
            # switching a new file to WAL at once); the lock is short-lived, so try again rather than fail a start
            if engine.dialect.name != "sqlite" or "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def upgrade(engine: Engine, revision: str) -> None:
    """Alembic's upgrade to `revision`, in one transaction on `engine` that first takes the database's migration
    lock: PostgreSQL's transaction-level advisory lock MIGRATION_LOCK; SQLite's write lock (BEGIN IMMEDIATE), since
    one file has one writer. A second process waits there (SQLite: up to its 30 s busy timeout), then reads the
    revision the first one committed, so Alembic has nothing left to do."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        elif conn.dialect.name == "sqlite":
            # pysqlite opens no transaction before DDL: take the write lock explicitly, so the whole upgrade is one
            # transaction that no other process interleaves with
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


class SqlUnitOfWork(UnitOfWork):
    def __init__(self, session_factory: sessionmaker):
        self._factory = session_factory
        self.session: Session | None = None

    def __enter__(self) -> SqlUnitOfWork:
        self.session = self._factory()
        s = self.session
        self.projects = SqlProjects(s)
        self.tags = SqlTags(s)
        self.images = SqlImages(s)
        self.iterations = SqlIterations(s)
        self.embeddings = SqlEmbeddings(s)
        self.predictions = SqlPredictions(s)
        self.channels = SqlChannels(s)
        self.messages = SqlMessages(s)
        self.keys = SqlKeys(s)
        self.exports = SqlExports(s)
        self.secrets = SqlSecrets(s)
        self.variants = SqlVariants(s)
        self.migrated = SqlMigrated(s)
        self.claims = SqlClaims(s)
        self.job_runs = SqlJobRuns(s)
        self.orphans = SqlOrphans(s)
        self.decisions = SqlDecisions(s)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.rollback()
        finally:
            if self.session is not None:
                self.session.close()
                self.session = None

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        if self.session is not None:
            self.session.rollback()

    def referenced_blob_keys(self, candidates: Iterable[str] | None = None) -> set[str]:
        return referenced_keys(self.session, candidates)

    def integrity_problems(self) -> list[str]:
        """SQLite: PRAGMA integrity_check and foreign_key_check (reads the whole file). PostgreSQL checks its pages
        itself; a cheap query over every table's catalogue entry shows the schema is there and readable."""
        s = self.session
        if s.get_bind().dialect.name == "sqlite":
            found = [r for (r,) in s.execute(text("PRAGMA integrity_check")) if r != "ok"]
            found += [f"foreign key: a row of {r[0]} points to a missing row of {r[2]}"
                      for r in s.execute(text("PRAGMA foreign_key_check"))]
            return found
        from .tables import metadata

        present = {r for (r,) in s.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))}
        return [f"table {name} is missing" for name in metadata.tables if name not in present]


def unit_of_work_factory(engine: Engine):
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    return lambda: SqlUnitOfWork(factory)
