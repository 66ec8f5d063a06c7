"""Migration 0006: the tables image links need appear on an existing store and go again on downgrade, on both
databases."""
from alembic import command
from sqlalchemy import inspect

from core.usecases import Deps, link_secret
from storage import LocalBlobStore, make_engine, migrate, unit_of_work_factory
from tests.integration.test_migration_tag_types import _alembic, database_url  # noqa: F401 - the fixture


def test_upgrade_adds_the_secret_and_variant_tables_and_downgrade_drops_them(database_url, tmp_path):  # noqa: F811
    engine = make_engine(database_url)
    _alembic(engine, command.upgrade, "0005")
    assert not {"server_secrets", "image_variants"} & set(inspect(engine).get_table_names())
    migrate(engine)
    assert {"server_secrets", "image_variants"} <= set(inspect(engine).get_table_names())
    deps = Deps(unit_of_work_factory(engine), LocalBlobStore(tmp_path / "blobs"), None)  # type: ignore[arg-type]
    key = link_secret(deps)
    assert link_secret(deps) == key
    _alembic(engine, command.downgrade, "0005")
    assert not {"server_secrets", "image_variants"} & set(inspect(engine).get_table_names())
