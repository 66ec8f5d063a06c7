"""a project's unknown threshold (issue #14)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 14:45:00.000000

`projects.unknown_threshold`: the unknown score (core.unknown) from which predictions are flagged as unlike
anything the project was trained on. NULL means the default each iteration was calibrated for (0.95: about 5 %
of images like the training set are flagged). Numbered 0012 as agreed for issue #14's parallel work; it follows
main's head, 0011.
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (see 0005: SQLite's batch mode would copy and drop `projects`).
def upgrade() -> None:
    op.add_column('projects', sa.Column('unknown_threshold', sa.Float(), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE projects DROP COLUMN unknown_threshold")  # SQLite 3.35+ and PostgreSQL
