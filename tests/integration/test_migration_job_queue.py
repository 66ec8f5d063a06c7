"""Migration 0011: procrastinate's schema and cvbot's job leases on PostgreSQL (nothing on SQLite); a job can be
queued once it ran, and downgrade removes every procrastinate object again."""
from alembic import command
from sqlalchemy import inspect, text

from storage import make_engine, migrate
from tests.integration.test_migration_tag_types import _alembic, database_url  # noqa: F401 - the fixture


def _procrastinate_objects(engine) -> set[str]:
    with engine.connect() as c:
        tables = {r for (r,) in c.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                                               " AND tablename LIKE 'procrastinate%'"))}
        funcs = {r for (r,) in c.execute(text("SELECT proname FROM pg_proc WHERE proname LIKE 'procrastinate%'"))}
    return tables | funcs


def test_queue_schema_on_postgresql_only(database_url):  # noqa: F811
    engine = make_engine(database_url)
    _alembic(engine, command.upgrade, "0010")
    before = set(inspect(engine).get_table_names())
    migrate(engine)
    after = set(inspect(engine).get_table_names())
    if engine.dialect.name == "sqlite":
        assert after == before  # SQLite keeps its jobs in the server process: no queue tables
        return
    assert {"procrastinate_jobs", "procrastinate_workers", "procrastinate_events", "cvbot_job_leases"} <= after
    from core.ports import Job
    from storage.queue import QueueRunner

    runner = QueueRunner(database_url)
    try:
        runner.submit(Job("train", {"iteration_id": "it-1"}), lambda: None)
        runner.submit(Job("train", {"iteration_id": "it-1"}), lambda: None)  # the same job waiting: kept once
        runner.submit(Job("train", {"iteration_id": "it-2"}), lambda: None)
    finally:
        runner.close()
    with engine.connect() as c:
        rows = c.execute(text("SELECT task_name, queue_name, args->>'kind', args->'args'->>'iteration_id', status "
                              "FROM procrastinate_jobs ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("cvbot.job", "cvbot", "train", "it-1", "todo"),
                                        ("cvbot.job", "cvbot", "train", "it-2", "todo")]
    _alembic(engine, command.downgrade, "0010")
    assert set(inspect(engine).get_table_names()) == before
    assert _procrastinate_objects(engine) == set()
