"""The `cvbot` command starts fast: no heavy library on the way to `cvbot --help` or `cvbot project list`, and
Alembic only when the database is not at the newest revision (a new one, or one from an older release)."""
import json
import subprocess
import sys

import pytest
from sqlalchemy import inspect

from storage import make_engine, migrate
from storage.db import HEAD_REVISION, schema_revisions, upgrade
from tests.e2e.test_cli import jrun
from tests.helpers import env_with

HEAVY = ("torch", "onnxruntime", "open_clip", "sklearn", "scipy", "PIL", "matplotlib", "aiohttp", "slack_bolt",
         "slack_sdk", "alembic", "apscheduler", "tqdm")


def _loaded_after(tmp_path, code: str) -> list[str]:
    """The heavy top-level modules a fresh interpreter has loaded after running `code`."""
    probe = (f"{code}\nimport sys, json\n"
             f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))")
    out = subprocess.run([sys.executable, "-c", probe], env=env_with(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_help_builds_the_parser_without_the_engine(tmp_path):
    code = "import sys\nfrom cvbot.cli import build_parser\nbuild_parser()\nassert 'core.usecases' not in sys.modules"
    assert _loaded_after(tmp_path, code) == []


def test_project_list_on_an_up_to_date_database_loads_no_heavy_library(tmp_path):
    assert jrun(tmp_path, "project", "list") == []  # a new database: migrated (Alembic runs this once)
    code = "from cvbot.cli import main\nassert main(['project', 'list', '--json']) == 0"
    assert _loaded_after(tmp_path, code) == []


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    (tmp_path / "data").mkdir()
    return f"sqlite:///{tmp_path / 'data' / 'cvbot.db'}"


def _cli_env(database_url):
    return {"DATABASE_URL": database_url} if database_url.startswith("postgresql") else {}


def test_a_new_database_is_migrated_to_the_head(tmp_path, database_url):
    out = subprocess.run([sys.executable, "-m", "cvbot", "project", "list", "--json"], capture_output=True,
                         text=True, env=env_with(tmp_path, **_cli_env(database_url)), timeout=120)
    assert out.returncode == 0, out.stderr
    assert schema_revisions(make_engine(database_url)) == {HEAD_REVISION}


def test_an_older_database_is_upgraded_by_the_cli(tmp_path, database_url):
    engine = make_engine(database_url)
    upgrade(engine, "0002")  # a database left by the release that had migrations up to 0002
    assert schema_revisions(engine) == {"0002"}
    assert "notify" not in {c["name"] for c in inspect(engine).get_columns("iterations")}

    env = env_with(tmp_path, **_cli_env(database_url))
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
