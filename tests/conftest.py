import os
from pathlib import Path

import pytest

from tests.helpers import FakeBackbone

MODEL_CACHE = Path(os.environ.get("CVBOT_TEST_MODEL_DIR", Path(__file__).parent.parent / ".venv" / "cvbot-test-models"))


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """One model cache for the whole run (the ONNX export of EfficientNet-Lite0 happens once)."""
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    return MODEL_CACHE


@pytest.fixture(scope="session")
def provider(model_dir):
    from core.backbones import BackboneProvider, BackboneSettings

    return BackboneProvider(BackboneSettings(cache_dir=str(model_dir)))


@pytest.fixture
def fake_backbone():
    return FakeBackbone()


def make_deps(tmp_path: Path, provider, runner=None, database_url: str | None = None):
    """Deps over a migrated SQLite (or the given) database and blobs under `tmp_path`, as the composition root
    builds them."""
    from core.usecases import Deps, InlineRunner
    from storage import LocalBlobStore, make_engine, migrate, unit_of_work_factory

    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'cvbot.db'}")
    migrate(engine)
    return Deps(unit_of_work_factory(engine), LocalBlobStore(tmp_path / "blobs"), provider, runner or InlineRunner())


def make_cv(tmp_path: Path, provider, runner=None, database_url: str | None = None, workspace: str = "default"):
    """The use cases of one workspace (training role) over `make_deps`; `.deps` reaches the uow, blobs, runner."""
    from core.usecases import Scope, UseCases

    return UseCases(make_deps(tmp_path, provider, runner, database_url), Scope.of(workspace))


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database per test when CVBOT_TEST_POSTGRES_URL names a server (.ci/run starts one)."""
    base = os.environ.get("CVBOT_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("set CVBOT_TEST_POSTGRES_URL to run the PostgreSQL variant (.ci/run does)")
    import uuid

    from sqlalchemy import create_engine, text

    name = f"cvbot_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def cv(request, tmp_path, provider):
    """`UseCases` of the "default" workspace on SQLite and on PostgreSQL; `cv.deps` holds the uow, blobs, runner."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    return make_cv(tmp_path, provider, database_url=url)
