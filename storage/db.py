"""Engine, migrations and the SQLAlchemy unit of work."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.ports import UnitOfWork

from .repositories import (
    SqlChannels, SqlExports, SqlKeys, SqlMessages, SqlEmbeddings, SqlImages, SqlIterations, SqlPredictions, SqlProjects, SqlTags, referenced_keys,
)

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


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


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (every head)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")


class SqlUnitOfWork(UnitOfWork):
    def __init__(self, session_factory: sessionmaker):
        self._factory = session_factory
        self.session: Session | None = None

    def __enter__(self) -> "SqlUnitOfWork":
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
