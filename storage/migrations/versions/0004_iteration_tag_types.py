"""iteration tag types as a column of their own

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 12:00:00.000000

Tag types (Regular / Negative per probe column) were kept inside the `performance` JSON under "tagTypes";
they are a property of the iteration, so they move to `iterations.tag_types` and leave `performance`.
"""
import json

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

iterations = sa.table(
    'iterations', sa.column('id', sa.String), sa.column('tag_ids', sa.JSON), sa.column('performance', sa.JSON),
    sa.column('tag_types', sa.JSON),
)


def _loaded(value):
    return json.loads(value) if isinstance(value, str) else value


def upgrade() -> None:
    with op.batch_alter_table('iterations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tag_types', sa.JSON(), nullable=True))
    bind = op.get_bind()
    for row in bind.execute(sa.select(iterations.c.id, iterations.c.tag_ids, iterations.c.performance)).all():
        perf = dict(_loaded(row.performance) or {})
        types = perf.pop('tagTypes', None) or ['Regular'] * len(_loaded(row.tag_ids) or [])
        bind.execute(iterations.update().where(iterations.c.id == row.id)
                     .values(tag_types=types, performance=perf or None))


def downgrade() -> None:
    bind = op.get_bind()
    for row in bind.execute(sa.select(iterations.c.id, iterations.c.performance, iterations.c.tag_types)).all():
        perf = dict(_loaded(row.performance) or {})
        perf['tagTypes'] = _loaded(row.tag_types) or []
        bind.execute(iterations.update().where(iterations.c.id == row.id).values(performance=perf))
    with op.batch_alter_table('iterations', schema=None) as batch_op:
        batch_op.drop_column('tag_types')
