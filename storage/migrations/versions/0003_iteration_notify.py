"""iteration notify target and reported_at

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing iterations get no target (NULL), so nothing is announced for them after the upgrade
    with op.batch_alter_table('iterations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notify', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('reported_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('iterations', schema=None) as batch_op:
        batch_op.drop_column('reported_at')
        batch_op.drop_column('notify')
