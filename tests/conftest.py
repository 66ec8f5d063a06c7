import os
import shutil
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


def make_service(tmp_path: Path, provider, runner=None):
    from core import CvService
    from storage import LocalBlobStore, make_engine, migrate, unit_of_work_factory

    engine = make_engine(f"sqlite:///{tmp_path / 'cvbot.db'}")
    migrate(engine)
    return CvService(unit_of_work_factory(engine), LocalBlobStore(tmp_path / "blobs"), provider, runner)


@pytest.fixture
def service(tmp_path, provider):
    return make_service(tmp_path, provider)
