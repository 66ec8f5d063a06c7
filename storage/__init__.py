"""Persistence adapters: SQLAlchemy repositories and unit of work, Alembic migrations, local blobs."""
from .blobs import LocalBlobStore
from .db import SqlUnitOfWork, make_engine, migrate, unit_of_work_factory
from .lock import StoreLock

__all__ = ["LocalBlobStore", "SqlUnitOfWork", "StoreLock", "make_engine", "migrate", "unit_of_work_factory"]
