"""Persistence adapters: SQLAlchemy repositories and unit of work, Alembic migrations, local blobs."""
from .blobs import LocalBlobStore
from .db import SqlUnitOfWork, make_engine, migrate, unit_of_work_factory

__all__ = ["LocalBlobStore", "SqlUnitOfWork", "make_engine", "migrate", "unit_of_work_factory"]
