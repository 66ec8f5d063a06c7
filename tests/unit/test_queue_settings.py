"""Where jobs go, as configured: CVBOT_JOBS, CVBOT_EMBED_CHUNK, the runner per database, procrastinate's conninfo."""
import pytest

from core import errors
from cvbot.bootstrap import SchedulerRunner, make_runner
from cvbot.config import Settings
from storage.queue import QueueRunner, conninfo, is_postgres

PG = "postgresql+psycopg://cv:secret@db.internal:5433/cvbot"


def test_jobs_and_embed_chunk_settings():
    s = Settings.from_env({})
    assert s.jobs is True and s.embed_chunk == 32 and not s.uses_postgres
    for off in ("off", "OFF", "0", "false", "no"):
        assert Settings.from_env({"CVBOT_JOBS": off}).jobs is False
    for on in ("on", "1", "true", "yes", " "):
        assert Settings.from_env({"CVBOT_JOBS": on}).jobs is True
    with pytest.raises(ValueError, match="CVBOT_JOBS must be on or off"):
        Settings.from_env({"CVBOT_JOBS": "sometimes"})
    assert Settings.from_env({"CVBOT_EMBED_CHUNK": "0"}).embed_chunk == 0
    assert Settings.from_env({"CVBOT_EMBED_CHUNK": "100"}).embed_chunk == 100
    for bad in ("-1", "many", "1.5"):
        with pytest.raises(ValueError, match="CVBOT_EMBED_CHUNK"):
            Settings.from_env({"CVBOT_EMBED_CHUNK": bad})
    assert Settings.from_env({"DATABASE_URL": PG}).uses_postgres


def test_the_queue_is_postgresql_only_and_local_jobs_stay_in_process():
    sqlite = Settings.from_env({})
    assert isinstance(make_runner(sqlite, "local"), SchedulerRunner)
    with pytest.raises(errors.InvalidInput, match="needs PostgreSQL"):
        make_runner(sqlite, "queue")
    runner = make_runner(Settings.from_env({"DATABASE_URL": PG}), "queue")
    assert isinstance(runner, QueueRunner) and runner.durable  # nothing connects until the first job
    assert not SchedulerRunner().durable


def test_conninfo_is_libpq_s_form_of_the_sqlalchemy_url():
    assert conninfo(PG) == "postgresql://cv:secret@db.internal:5433/cvbot"
    assert is_postgres(PG) and is_postgres("postgresql://x@y/z") and not is_postgres("sqlite:///data/cvbot.db")
