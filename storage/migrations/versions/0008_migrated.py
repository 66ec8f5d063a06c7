"""what `cvbot migrate` copied from another Custom Vision endpoint

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 13:20:00.000000

`migrated`: (source endpoint, kind, source id) -> the id of the copy, with the target project it belongs to
(deleted with it). A rerun of `cvbot migrate` skips what is recorded, so it continues and never duplicates.
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'migrated',
        sa.Column('source', sa.String(512), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('source_id', sa.String(128), nullable=False),
        sa.Column('target_id', sa.String(36), nullable=False),
        sa.Column('project_id', sa.String(36), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_migrated_project_id_projects'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('source', 'kind', 'source_id', name=op.f('pk_migrated')),
    )
    op.create_index(op.f('ix_migrated_project_id'), 'migrated', ['project_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_migrated_project_id'), table_name='migrated')
    op.drop_table('migrated')
