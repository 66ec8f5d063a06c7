"""server secrets and image variants, for signed image links

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 13:10:00.000000

Image links (originalImageUri, resizedImageUri, thumbnailUri) are signed with one key that every process of an
install must share: `server_secrets` keeps the key generated when CVBOT_SECRET_KEY is unset. `image_variants`
finds the resized copy or thumbnail (a blob) already made from a stored image.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'server_secrets',
        sa.Column('name', sa.String(64), nullable=False),
        sa.Column('value', sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_server_secrets')),
    )
    op.create_table(
        'image_variants',
        sa.Column('source_key', sa.String(64), nullable=False),
        sa.Column('variant', sa.String(16), nullable=False),
        sa.Column('blob_key', sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint('source_key', 'variant', name=op.f('pk_image_variants')),
    )


def downgrade() -> None:
    op.drop_table('image_variants')
    op.drop_table('server_secrets')
