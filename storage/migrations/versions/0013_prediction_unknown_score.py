"""a stored prediction's unknown score (issue #14)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 17:30:00.000000

`predictions.unknown_score` and `predictions.unknown_threshold`: the unknown score (core.unknown) a prediction
was answered with and the threshold it was compared with then, so that a stored prediction reads back as it
was answered (the project's threshold may change later). NULL for predictions made by iterations trained before
the score, and for every prediction stored before this revision.
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (see 0005: SQLite's batch mode would copy and drop the table).
def upgrade() -> None:
    op.add_column('predictions', sa.Column('unknown_score', sa.Float(), nullable=True))
    op.add_column('predictions', sa.Column('unknown_threshold', sa.Float(), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE predictions DROP COLUMN unknown_threshold")  # SQLite 3.35+ and PostgreSQL
    op.execute("ALTER TABLE predictions DROP COLUMN unknown_score")
