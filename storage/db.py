"""Engine, migrations and the SQLAlchemy unit of work."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.ports import UnitOfWork

from .repositories import (
    SqlChannels,
    SqlEmbeddings,
    SqlExports,
    SqlImages,
    SqlIterations,
    SqlKeys,
    SqlMessages,
    SqlPredictions,
    SqlProjects,
    SqlTags,
    referenced_keys,
)

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions, so that start-up can tell an up-to-date database with one query
# instead of loading Alembic (tests/unit/test_schema_head.py checks it against Alembic's own head).
HEAD_REVISION = "0005"


def make_engine(url: str) -> Engine:
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


def migrate(engine: Engine, force: bool = False) -> bool:
    """Bring the schema to the newest revision (every head) unless it is there already; True if Alembic ran.

    An up-to-date database costs one query; Alembic runs for a new or older database (and for an unknown
    revision, which it refuses), or always with `force`."""
    if not force and schema_revisions(engine) == {HEAD_REVISION}:
        return False
    upgrade(engine, "heads")
    return True


def upgrade(engine: Engine, revision: str) -> None:
    """Alembic's upgrade to `revision`, in one transaction on `engine`."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


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


def unit_of_work_factory(engine: Engine):
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    return lambda: SqlUnitOfWork(factory)
