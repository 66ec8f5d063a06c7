"""image metadata and the publish resource id, for the Custom Vision REST surface

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 13:00:00.000000

`images.metadata`: Custom Vision's per-image key/value strings (update_image_metadata; returned on images).
`iterations.publish_resource_id`: the predictionId a client sent to publish_iteration, returned as
`originalPublishResourceId` as Azure does (it was always "cvbot").
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (see 0005: SQLite's batch mode would copy and drop the tables).
def upgrade() -> None:
    op.add_column('images', sa.Column('metadata', sa.JSON(none_as_null=True), nullable=True))
    op.add_column('iterations', sa.Column('publish_resource_id', sa.String(length=1024), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE iterations DROP COLUMN publish_resource_id")  # SQLite 3.35+ and PostgreSQL
    op.execute("ALTER TABLE images DROP COLUMN metadata")
