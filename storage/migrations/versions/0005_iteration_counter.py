"""a per-project iteration counter, so numbers are never reused

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 13:00:00.000000

Iteration numbers were max(number) + 1, so deleting the newest iteration handed its number to the next
training (and a client holding "iteration 3" got another model). `projects.last_iteration_number` counts the
numbers handed out; it starts at each project's highest number.
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases: SQLite's batch mode would copy and drop `projects`, and with foreign keys on,
# dropping it deletes every project's rows by cascade.
def upgrade() -> None:
    op.add_column('projects', sa.Column('last_iteration_number', sa.Integer(), nullable=False, server_default='0'))
    op.execute("UPDATE projects SET last_iteration_number = COALESCE("
               "(SELECT MAX(number) FROM iterations WHERE iterations.project_id = projects.id), 0)")


def downgrade() -> None:
    op.execute("ALTER TABLE projects DROP COLUMN last_iteration_number")  # SQLite 3.35+ and PostgreSQL
