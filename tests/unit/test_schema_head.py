"""Start-up compares the database's alembic_version with storage.db.HEAD_REVISION instead of loading Alembic:
the constant must name Alembic's one head, or every start-up would run the migrations (or skip a new one)."""
from alembic.config import Config
from alembic.script import ScriptDirectory

from storage.db import HEAD_REVISION, MIGRATIONS


def test_head_revision_is_alembics_only_head():
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_heads() == [HEAD_REVISION]
