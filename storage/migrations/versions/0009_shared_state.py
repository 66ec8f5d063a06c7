"""state shared by every process: claimed keys, scheduled job runs, orphan candidates; project schedule settings

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 14:20:00.000000

`claims`: keys taken once across processes (processed Slack event ids) until they expire. `job_runs`: one row per
scheduled job and slot, inserted by the process that runs it (the others find it and skip). `orphan_blobs`: blobs a
collection found unreferenced, deleted by a later one past a grace period. `projects.retrain` (nightly retraining,
NULL = off) and `projects.prediction_retention_days` (NULL = the install's default, 0 = keep): existing projects get
NULL for both, so an upgrade retrains nothing and deletes nothing.
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (as 0005): SQLite's batch mode would copy and drop `projects`, and with foreign
# keys on, dropping it deletes every project's rows by cascade.
def upgrade() -> None:
    op.add_column('projects', sa.Column('retrain', sa.String(16), nullable=True))
    op.add_column('projects', sa.Column('prediction_retention_days', sa.Integer(), nullable=True))
    op.create_table(
        'claims',
        sa.Column('key', sa.String(255), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_claims')),
    )
    op.create_index(op.f('ix_claims_expires_at'), 'claims', ['expires_at'], unique=False)
    op.create_table(
        'job_runs',
        sa.Column('job', sa.String(64), nullable=False),
        sa.Column('slot', sa.String(64), nullable=False),
        sa.Column('owner', sa.String(256), nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('result', sa.JSON(none_as_null=True), nullable=True),
        sa.PrimaryKeyConstraint('job', 'slot', name=op.f('pk_job_runs')),
    )
    op.create_index(op.f('ix_job_runs_started_at'), 'job_runs', ['started_at'], unique=False)
    op.create_table(
        'orphan_blobs',
        sa.Column('key', sa.String(64), nullable=False),
        sa.Column('found_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_orphan_blobs')),
    )


def downgrade() -> None:
    op.drop_table('orphan_blobs')
    op.drop_index(op.f('ix_job_runs_started_at'), table_name='job_runs')
    op.drop_table('job_runs')
    op.drop_index(op.f('ix_claims_expires_at'), table_name='claims')
    op.drop_table('claims')
    op.execute("ALTER TABLE projects DROP COLUMN prediction_retention_days")  # SQLite 3.35+ and PostgreSQL
    op.execute("ALTER TABLE projects DROP COLUMN retrain")
