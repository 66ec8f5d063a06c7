"""The unit tier runs on fakes (tests/fakes.py): opening SQLite or an ONNX model here is a mistake, and fails."""
import sqlite3

import pytest

from tests.fakes import fake_deps


def _forbidden(what: str):
    def refuse(*args, **kwargs):
        raise AssertionError(f"unit tests must not open {what}; use tests/fakes.py, or move the test to "
                             "tests/integration")
    return refuse


@pytest.fixture(autouse=True, scope="package")
def _no_database_or_onnx():  # package scope: undone after the unit tier, whatever runs in the same session
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlite3, "connect", _forbidden("SQLite"))
        try:
            import onnxruntime
        except ImportError:
            pass
        else:
            mp.setattr(onnxruntime, "InferenceSession", _forbidden("an ONNX model"))
        yield


@pytest.fixture(scope="session")
def provider():
    raise AssertionError("unit tests use FakeBackbone (tests/helpers.py), not the real backbones; a test of a real "
                         "model belongs in tests/integration")


@pytest.fixture(scope="session")
def model_dir():
    raise AssertionError("unit tests need no model cache; a test of a real model belongs in tests/integration")


@pytest.fixture
def cv():
    """`UseCases` of the "default" workspace over fakes (in place of the database-backed `cv` of tests/conftest.py)."""
    from core.usecases import Scope, UseCases

    return UseCases(fake_deps(), Scope.of("default"))
