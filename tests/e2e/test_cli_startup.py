"""The `cvbot` command runs Alembic only when the database is not at the newest revision (a new one, or one from
an older release): both are brought to the head."""
import subprocess
import sys

import pytest
from sqlalchemy import inspect

from storage import make_engine, migrate
from storage.db import HEAD_REVISION, schema_revisions, upgrade
from tests.helpers import env_with


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    (tmp_path / "data").mkdir()
    return f"sqlite:///{tmp_path / 'data' / 'cvbot.db'}"


def _cli_env(tmp_path, database_url):
    return {"DATABASE_URL": database_url} if database_url.startswith("postgresql") else {}


def test_a_new_database_is_migrated_to_the_head(tmp_path, database_url):
    out = subprocess.run([sys.executable, "-m", "cvbot", "project", "list", "--json"], capture_output=True,
                         text=True, env=env_with(tmp_path, **_cli_env(tmp_path, database_url)), timeout=120)
    assert out.returncode == 0, out.stderr
    assert schema_revisions(make_engine(database_url)) == {HEAD_REVISION}


def test_an_older_database_is_upgraded_by_the_cli(tmp_path, database_url):
    engine = make_engine(database_url)
    upgrade(engine, "0002")  # a database left by the release that had migrations up to 0002
    assert schema_revisions(engine) == {"0002"}
    assert "notify" not in {c["name"] for c in inspect(engine).get_columns("iterations")}

    env = env_with(tmp_path, **_cli_env(tmp_path, database_url))
    out = subprocess.run([sys.executable, "-m", "cvbot", "project", "create", "after-upgrade", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    engine.dispose()
    assert schema_revisions(engine) == {HEAD_REVISION}
    assert "notify" in {c["name"] for c in inspect(engine).get_columns("iterations")}


def test_an_up_to_date_database_is_checked_with_one_query(database_url):
    engine = make_engine(database_url)
    assert schema_revisions(engine) == set()
    assert migrate(engine) is True
    assert migrate(engine) is False  # already at the head: Alembic does not run
    assert migrate(engine, force=True) is True and schema_revisions(engine) == {HEAD_REVISION}
