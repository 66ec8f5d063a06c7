"""the job queue on PostgreSQL: procrastinate's schema and cvbot's job leases

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 14:30:00.000000

PostgreSQL only (SQLite installs run jobs inside `cvbot serve` and need nothing): procrastinate's tables, types and
functions (the schema of the pinned procrastinate version, storage/queue.py) and `cvbot_job_leases`, which names
the worker process holding each running job. Applied here so that every cvbot process migrates the same way.
"""
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def _raw(sql: str) -> None:
    # the driver's own connection (the same transaction): no parameter parsing of the '%' in procrastinate's SQL
    op.get_bind().connection.driver_connection.execute(sql)


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    from storage.queue import LEASES_DDL, schema_sql

    _raw(schema_sql())
    _raw(LEASES_DDL)


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    _raw("DROP TABLE IF EXISTS cvbot_job_leases")
    _raw("""
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'procrastinate%' LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', r.tablename);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS f FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate%' LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', r.f);
    END LOOP;
    FOR r IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname = current_schema() AND t.typname LIKE 'procrastinate%' AND t.typtype = 'e' LOOP
        EXECUTE format('DROP TYPE IF EXISTS %I CASCADE', r.typname);
    END LOOP;
END $$;
""")
