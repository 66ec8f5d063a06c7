"""the untagged pool's channel setting and recorded labelling decisions

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 14:10:00.000000

`channel_bindings.keep_untagged`: images posted without a tag in that channel join the project's untagged pool
(`/cv settings keep-untagged=on`). `label_decisions`: what people answered about an image in the mislabel audit
(Keep / Retag) or on a suggestion (Skip / Confirm), with the tags it carried then, so it is not asked again until
they change; deleted with the image or the project.
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (see 0005: SQLite's batch mode would copy and drop the tables).
def upgrade() -> None:
    op.add_column('channel_bindings', sa.Column('keep_untagged', sa.Boolean(), nullable=False,
                                                server_default=sa.false()))
    op.create_table(
        'label_decisions',
        sa.Column('image_id', sa.String(36), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('project_id', sa.String(36), nullable=False),
        sa.Column('tags_key', sa.Text(), nullable=False),
        sa.Column('decision', sa.String(16), nullable=False),
        sa.Column('decided_by', sa.String(128), nullable=True),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_label_decisions_image_id_images'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_label_decisions_project_id_projects'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('image_id', 'kind', name=op.f('pk_label_decisions')),
    )
    op.create_index(op.f('ix_label_decisions_project_id'), 'label_decisions', ['project_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_label_decisions_project_id'), table_name='label_decisions')
    op.drop_table('label_decisions')
    op.execute("ALTER TABLE channel_bindings DROP COLUMN keep_untagged")  # SQLite 3.35+ and PostgreSQL
