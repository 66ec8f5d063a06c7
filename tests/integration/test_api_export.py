"""The ONNX export behind the API's export_iteration: one graph that reproduces the served predictions."""
import io
import json
import time
import zipfile

import numpy as np
import pytest

from core import errors
from core.export import ExportUnsupported, build_model
from core.images import decode_rgb
from core.model import ClassificationType
from core.probe import LinearProbe
from core.usecases import ImageUpload, export_file
from tests.helpers import colour_images, png_bytes

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (30, 40, 220)


def _wait_export(cv, project_id, iteration_id, export_id=None, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        exports = cv.exports.list(project_id, iteration_id)
        (export,) = [e for e in exports if e.id == export_id] if export_id else exports
        if export.status != "Exporting" or time.monotonic() > deadline:
            return export
        time.sleep(0.2)


def test_multilabel_export_uses_sigmoids_and_matches_predict(cv):
    import onnxruntime as ort

    p = cv.projects.create("multi", classification_type=ClassificationType.Multilabel)
    red, blue = cv.tags.create(p.id, "red"), cv.tags.create(p.id, "blue")
    ups = [ImageUpload(d, f"r{i}", [red.id]) for i, d in enumerate(colour_images(6, RED, 1))]
    ups += [ImageUpload(d, f"b{i}", [blue.id]) for i, d in enumerate(colour_images(6, BLUE, 2))]
    ups += [ImageUpload(d, f"m{i}", [red.id, blue.id]) for i, d in enumerate(colour_images(6, (125, 30, 125), 3))]
    ups += [ImageUpload(d, f"g{i}", []) for i, d in enumerate(colour_images(6, GREEN, 4))]
    cv.images.add(p.id, ups)
    it = cv.training.wait(p.id, cv.training.train(p.id).id, timeout=120)
    assert it.status.value == "Completed", it.failure_reason

    first = cv.exports.start(p.id, it.id, "onnx")
    try:  # one export at a time per iteration; once it is done, asking again returns it
        again = cv.exports.start(p.id, it.id, "ONNX")
        assert (again.id, again.status) == (first.id, "Done")
    except errors.CvError as busy:
        assert busy.code == "BadRequestExportAlreadyInProgress"
    export = _wait_export(cv, p.id, it.id)
    assert export.status == "Done", export.failure_reason
    package = zipfile.ZipFile(io.BytesIO(export_file(cv.deps, it.id, export.id)))
    manifest = json.loads(package.read("cvexport.manifest"))
    assert manifest["ClassificationType"] == "Multilabel"
    assert manifest["UnknownOutput"]["name"] == "unknown_score" and manifest["UnknownOutput"]["threshold"] == 0.95
    session = ort.InferenceSession(package.read("model.onnx"), providers=["CPUExecutionProvider"])
    backbone = cv.deps.backbones.for_domain(it.domain)
    labels = package.read("labels.txt").decode().split()
    assert [o.name for o in session.get_outputs()] == ["model_output", "unknown_score"]
    unknown_scores = []
    for blob in colour_images(2, (125, 30, 125), 9) + colour_images(1, GREEN, 10) + [png_bytes(seed=5)]:
        # The server's own preprocessing, minus the normalisation the model now does itself.
        norm = backbone.preprocess(decode_rgb(blob))
        pixels = (norm * np.array(backbone.preprocessing.std)[:, None, None]
                  + np.array(backbone.preprocessing.mean)[:, None, None]) * 255.0
        bgr = pixels[::-1]  # the file takes BGR, as Azure's ONNX exports do
        outputs = session.run(None, {"data": bgr[None].astype(np.float32)})
        local = outputs[0][0]
        prediction = cv.predictions.predict(p.id, blob, store=False)
        served = {x.tag_name: x.probability for x in prediction.predictions}
        np.testing.assert_allclose(local, [served[n] for n in labels], atol=1e-4)
        # the unknown score, as the server computes it (float32 in the graph)
        assert abs(float(outputs[1][0]) - prediction.unknown_score) <= 1e-3
        unknown_scores.append(float(outputs[1][0]))
    assert unknown_scores[-1] > 0.99 and min(unknown_scores[:-1]) < 0.95  # noise: like nothing trained
    assert abs(float(local.sum()) - 1) > 1e-3  # independent sigmoids, not a softmax

    # A project's own unknown threshold is the one the manifest tells the export's users.
    cv.projects.update(p.id, unknown_threshold=0.8)
    half = cv.exports.start(p.id, it.id, "ONNX", "ONNXFloat16")
    half = _wait_export(cv, p.id, it.id, half.id)
    assert half.status == "Done", half.failure_reason
    half_manifest = json.loads(zipfile.ZipFile(io.BytesIO(export_file(cv.deps, it.id, half.id)))
                               .read("cvexport.manifest"))
    assert half_manifest["UnknownOutput"]["threshold"] == 0.8

    # The export's blob goes with its iteration.
    key = next(e.blob_key for e in cv.exports.list(p.id, it.id))
    cv.iterations.delete(p.id, it.id, release_default=True)
    assert not cv.deps.blobs.exists(key)


def test_non_exportable_requests_are_refused(cv, fake_backbone):
    p = cv.projects.create("untrained")
    with pytest.raises(errors.InvalidInput) as e:
        cv.exports.start(p.id, "00000000-0000-0000-0000-000000000000", "VAIDK")
    assert e.value.code == "BadRequestProjectUnsupportedExportPlatform"
    with pytest.raises(errors.NotFound):
        cv.exports.start(p.id, "00000000-0000-0000-0000-000000000000", "ONNX")
    probe = LinearProbe()
    probe.coef_ = np.zeros((fake_backbone.dim + 1, 2), np.float32)
    with pytest.raises(ExportUnsupported):  # a backbone with no ONNX graph
        build_model(fake_backbone, probe, ["a", "b"], ["1", "2"])
