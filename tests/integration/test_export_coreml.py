"""CoreML export (best effort): the conversion runs here with coremltools, and the file has the shape Azure's
CoreML models and `coreml` sample use. Core ML does not run on Linux, so its predictions cannot be compared with
the server's here; the converter checks its PyTorch translation of the graph against ONNX Runtime instead."""
import json

import pytest

from core.export import ExportUnsupported
from core.export.base import ExportRequest
from core.export.coreml import CoreMLExporter
from tests.conftest import make_cv
from tests.export_support import labels, train_compact

ct = pytest.importorskip("coremltools", reason="pip install 'cvbot[export]' to test the CoreML export")
pytest.importorskip("onnx2torch", reason="pip install 'cvbot[export]' to test the CoreML export")
pytestmark = pytest.mark.slow  # each conversion loads torch and coremltools in a child process (~20-45 s)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, provider):
    return train_compact(make_cv(tmp_path_factory.mktemp("coreml"), provider))


def _spec(package, tmp_path):
    (tmp_path / "model.mlmodel").write_bytes(package.read("model.mlmodel"))
    return ct.models.MLModel(str(tmp_path / "model.mlmodel"), skip_model_load=True).get_spec()


@pytest.mark.parametrize("flavor", [None, "CoreMLFloat16"])
def test_conversion_gives_azures_coreml_shape(trained, tmp_path, flavor):
    package = trained.export("CoreML", flavor)
    spec = _spec(package, tmp_path)
    (inp,) = spec.description.input
    image = inp.type.imageType
    assert (inp.name, image.width, image.height) == ("data", 224, 224)
    assert image.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    outputs = {o.name: o.type.WhichOneof("Type") for o in spec.description.output}
    assert outputs == {"classLabel": "stringType", "loss": "dictionaryType"}
    assert list(spec.neuralNetworkClassifier.stringClassLabels.vector) == labels(package)
    assert spec.description.metadata.userDefined["iterationId"] == trained.iteration_id
    layers = spec.neuralNetworkClassifier.layers
    convs = [layer.convolution.weights for layer in layers if layer.WhichOneof("layer") == "convolution"]
    assert len(convs) > 40  # the whole backbone is in the file
    if flavor == "CoreMLFloat16":
        assert all(w.float16Value and not w.floatValue for w in convs)
    else:
        assert all(w.floatValue and not w.float16Value for w in convs)
    manifest = json.loads(package.read("cvexport.manifest"))
    assert manifest["Flavor"] == (flavor or "CoreML") and "not" in manifest["Note"]


def test_a_failed_conversion_says_why(tmp_path):
    request = ExportRequest(b"not an onnx graph", ["a", "b"], {}, None, tmp_path)
    with pytest.raises(ExportUnsupported) as e:
        CoreMLExporter().files(request)
    assert "coremltools could not convert this model here" in e.value.message
    assert e.value.code == "BadRequestExportValidationFailed"


def test_unavailable_says_what_to_install(monkeypatch):
    import importlib.util

    assert CoreMLExporter().unavailable() is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "coremltools" else real(name, *a))
    assert "coremltools" in CoreMLExporter().unavailable() and "cvbot[export]" in CoreMLExporter().unavailable()
