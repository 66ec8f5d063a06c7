"""Alembic environment: runs on the connection cvbot hands over (storage.db.migrate) or on DATABASE_URL."""
import os

from alembic import context
from sqlalchemy import create_engine

from storage.tables import metadata

config = context.config


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = os.environ.get("DATABASE_URL") or "sqlite:///" + os.path.join(os.environ.get("CVBOT_DATA_DIR", "data"),
                                                                        "cvbot.db")
    engine = create_engine(url)
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
