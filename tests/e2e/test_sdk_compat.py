"""Custom Vision compatibility beyond the SDK's happy path, against a real `cvbot serve` (real SQLite, real images,
real backbone): Microsoft's REST quickstart with its capitalised paths, the object-detection quickstart's first
steps, image metadata, artifacts, images from predictions, publishing and deleting, URL-upload failures."""
from __future__ import annotations

import json
import time
import urllib.parse
import uuid

import pytest

from tests.e2e import test_sdk_api
from tests.e2e.test_sdk_api import (
    GREEN,
    PREDICTION_KEY,
    RED,
    TRAINING_KEY,
    ImageHost,
    cv_error,
    wait_trained,
)
from tests.helpers import colour_images, png_bytes

sdk = pytest.importorskip("azure.cognitiveservices.vision.customvision.training")
from azure.cognitiveservices.vision.customvision.training.models import (  # noqa: E402
    ImageFileCreateBatch,
    ImageFileCreateEntry,
    ImageIdCreateBatch,
    ImageIdCreateEntry,
    ImageUrlCreateBatch,
    ImageUrlCreateEntry,
    Project,
    ProjectSettings,
)
from msrest.exceptions import HttpOperationError  # noqa: E402

# The same real `cvbot serve` as tests/e2e/test_sdk_api.py (its log checked alike), with this module's image_host.
server = test_sdk_api.server
NOT_AN_IMAGE = b"<html>a web page, not an image</html>"
TOO_LARGE = b"\x89PNG\r\n\x1a\n" + bytes(7 * 1024 * 1024)  # over the 6 MB training limit


@pytest.fixture(scope="module")
def image_host():
    """Serves what URL uploads meet: an image, a web page, an image over the limit (and 404 for other names)."""
    host = ImageHost({"red.png": colour_images(1, RED, 91)[0], "page.html": NOT_AN_IMAGE, "huge.png": TOO_LARGE})
    yield host
    host.httpd.shutdown()


def multipart(files: list[bytes]) -> tuple[str, bytes]:
    """(Content-Type, body) of a multipart/form-data upload, one part per image, as curl -F sends it."""
    boundary = uuid.uuid4().hex
    body = b""
    for n, data in enumerate(files):
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image{n}\"; filename=\"image{n}.png\"\r\n"
                 "Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


# =========================================================================== Microsoft's REST quickstart
@pytest.mark.slow
def test_rest_quickstart_with_capitalised_paths(server):
    """The REST quickstart's request sequence, with its paths exactly as written there: Training and Prediction
    capitalised, Training-key / Prediction-Key headers, multipart uploads with tagIds in the query."""
    training = "/customvision/v3.3/Training"
    key = {"Training-key": TRAINING_KEY}

    def call(method, path, headers=None, body=None, expect=200):
        status, raw = server.raw(method, path, {**key, **(headers or {})}, body)
        assert status == expect, (method, path, status, raw[:300])
        return json.loads(raw) if raw else None

    project = call("POST", f"{training}/projects?name=" + urllib.parse.quote("REST quickstart"))
    pid = project["id"]
    tags = {name: call("POST", f"{training}/projects/{pid}/tags?name={name}")["id"] for name in ("Red", "Green")}
    for name, colour, seed in (("Red", RED, 11), ("Green", GREEN, 12)):
        ctype, body = multipart(colour_images(6, colour, seed))
        summary = call("POST", f"{training}/projects/{pid}/images?tagIds={tags[name]}", {"Content-Type": ctype}, body)
        assert summary["isBatchSuccessful"] and len(summary["images"]) == 6
        # the quickstart's own upload: one image's raw bytes labelled multipart/form-data, with no boundary
        raw = call("POST", f"{training}/projects/{pid}/images?tagIds={tags[name]}",
                   {"Content-Type": "multipart/form-data"}, colour_images(1, colour, seed + 10)[0])
        assert raw["isBatchSuccessful"] and [i["status"] for i in raw["images"]] == ["OK"]
    iteration = call("POST", f"{training}/projects/{pid}/train")
    deadline = time.monotonic() + 180
    while iteration["status"] == "Training" and time.monotonic() < deadline:
        time.sleep(0.3)
        iteration = call("GET", f"{training}/projects/{pid}/iterations/{iteration['id']}")
    assert iteration["status"] == "Completed", iteration
    resource = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/Pred"
    assert call("POST", f"{training}/projects/{pid}/iterations/{iteration['id']}/publish?publishName=Model1"
                f"&predictionId={urllib.parse.quote(resource, safe='')}") is True
    assert call("GET", f"{training}/projects/{pid}/iterations/{iteration['id']}")[
        "originalPublishResourceId"] == resource

    status, raw = server.raw("POST", f"/customvision/v3.1/Prediction/{pid}/classify/iterations/Model1/image",
                             {"Prediction-Key": PREDICTION_KEY, "Content-Type": "application/octet-stream"},
                             colour_images(1, RED, 99)[0])
    assert status == 200, raw[:300]
    result = json.loads(raw)
    assert result["predictions"][0]["tagName"] == "Red" and result["iteration"] == iteration["id"]

    # Any case of the prefix; what follows it keeps its case (a publish name is case-sensitive).
    assert call("GET", f"/CUSTOMVISION/V3.3/TRAINING/projects/{pid}")["name"] == "REST quickstart"
    assert call("GET", f"/customvision/v3.4-preview/Training/projects/{pid}")["id"] == pid
    status, raw = server.raw("POST", f"/customvision/v3.1/Prediction/{pid}/classify/iterations/model1/image",
                             {"Prediction-Key": PREDICTION_KEY, "Content-Type": "application/octet-stream"},
                             colour_images(1, RED, 99)[0])
    assert status == 404 and json.loads(raw)["code"] == "NotFound"
    status, raw = server.raw("GET", "/customvision/v3.3/Training/no/such/thing", key)
    assert status == 404 and json.loads(raw)["code"] == "NotFound" and "/Training/no/such" in json.loads(raw)["message"]
    status, raw = server.raw("PUT", f"{training}/projects", key)
    assert status == 405 and json.loads(raw)["code"] == "BadRequestNotSupported"
    status, raw = server.raw("GET", f"{training}/projects", {})
    assert status == 401

    # A published project is not deleted (Azure's code); unpublished, it is.
    error = call("DELETE", f"{training}/projects/{pid}", expect=400)
    assert error["code"] == "BadRequestIterationIsPublished"
    assert call("GET", f"{training}/projects/{pid}")["id"] == pid
    call("DELETE", f"{training}/projects/{pid}/iterations/{iteration['id']}/publish", expect=204)
    call("DELETE", f"{training}/projects/{pid}", expect=204)
    assert call("GET", f"{training}/projects/{pid}", expect=404)["code"] == "NotFound"


# =========================================================================== object detection
def test_object_detection_quickstart_gets_azures_clear_error(server):
    trainer = server.trainer()
    domains = trainer.get_domains()
    assert len([d for d in domains if d.type == "Classification"]) == 6
    assert all(d.enabled for d in domains if d.type == "Classification")
    detection = [d for d in domains if d.type == "ObjectDetection"]
    assert detection and not any(d.enabled for d in detection)
    # The object-detection quickstart's lookup, then its create_project: refused with Azure's code.
    od = next(d for d in domains if d.type == "ObjectDetection" and d.name == "General")
    assert od.id == "da2e3a8a-40a5-4171-82f4-58522f70fbc1"
    assert trainer.get_domain(od.id).enabled is False
    before = {p.id for p in trainer.get_projects()}
    status, code, message = cv_error(trainer.create_project, "My Detection Project", domain_id=od.id)
    assert (status, code) == (400, "BadRequestUnsupportedDomain") and "object detection" in message
    assert {p.id for p in trainer.get_projects()} == before
    project = trainer.create_project("classifier")
    status, code, _ = cv_error(trainer.update_project, project.id,
                               Project(name="classifier", description="", settings=ProjectSettings(domain_id=od.id)))
    assert (status, code) == (400, "BadRequestUnsupportedDomain")
    assert trainer.get_project(project.id).settings.domain_id == project.settings.domain_id
    trainer.delete_project(project.id)


# =========================================================================== metadata and artifacts
def test_image_metadata_and_artifacts(server):
    trainer = server.trainer()
    project = trainer.create_project("metadata")
    blobs = [png_bytes(seed=n) for n in range(3)]
    entries = [ImageFileCreateEntry(name=f"{n}.png", contents=b) for n, b in enumerate(blobs)]
    created = trainer.create_images_from_files(project.id, ImageFileCreateBatch(
        images=entries, metadata={"camera": "north"}))
    assert created.is_batch_successful
    ids = [i.image.id for i in created.images]
    assert all(i.image.metadata == {"camera": "north"} for i in created.images)

    summary = trainer.update_image_metadata(project.id, ids[:2], {"shift": "night", "camera": "south"})
    assert summary.is_batch_successful
    assert [(e.image_id, e.status, e.metadata) for e in summary.images] == [
        (i, "OK", {"camera": "south", "shift": "night"}) for i in ids[:2]]
    by_id = {i.id: i.metadata for i in trainer.get_images(project.id)}
    assert by_id == {ids[0]: {"camera": "south", "shift": "night"}, ids[1]: {"camera": "south", "shift": "night"},
                     ids[2]: {"camera": "north"}}

    # Per image: an unknown id and a full image fail alone (207), the others are updated.
    trainer.update_image_metadata(project.id, [ids[2]], {f"k{n}": "v" for n in range(9)})
    missing = str(uuid.uuid4())
    summary = trainer.update_image_metadata(project.id, [ids[0], ids[2], missing], {"extra": "1"})
    assert not summary.is_batch_successful
    assert [e.status for e in summary.images] == ["OK", "ErrorLimitExceed", "ErrorImageNotFound"]
    assert len(trainer.get_images_by_ids(project.id, [ids[2]])[0].metadata) == 10
    # Bad keys or values: Azure's codes, nothing changes.
    before = {i.id: i.metadata for i in trainer.get_images(project.id)}
    assert cv_error(trainer.update_image_metadata, project.id, ids, {"k" * 129: "v"})[:2] == (
        400, "BadRequestImageMetadataKey")
    assert cv_error(trainer.update_image_metadata, project.id, ids, {"k": "v" * 257})[:2] == (
        400, "BadRequestImageMetadataValue")
    assert {i.id: i.metadata for i in trainer.get_images(project.id)} == before

    # get_artifact serves a training image's bytes as uploaded, by images/{imageId}.
    assert b"".join(trainer.get_artifact(project.id, f"images/{ids[1]}")) == blobs[1]
    assert b"".join(trainer.get_artifact(project.id, f"/Images/{ids[2].upper()}")) == blobs[2]
    status, raw = server.raw("GET", f"/customvision/v3.3/training/projects/{project.id}/artifacts?path=images/{ids[0]}",
                             {"Training-Key": TRAINING_KEY})
    assert status == 200 and raw == blobs[0]
    for path, expected in ((f"images/{missing}", 404), ("../../etc/passwd", 400), ("blobs/x", 400)):
        with pytest.raises(HttpOperationError) as e:
            b"".join(trainer.get_artifact(project.id, path))
        assert e.value.response.status_code == expected, path
    other = trainer.create_project("other")
    with pytest.raises(HttpOperationError) as e:  # one project's image is not another's artifact
        b"".join(trainer.get_artifact(other.id, f"images/{ids[0]}"))
    assert e.value.response.status_code == 404
    status, _ = server.raw("GET", f"/customvision/v3.3/training/projects/{project.id}/artifacts?path=images/{ids[0]}",
                           {"Prediction-Key": PREDICTION_KEY})
    assert status == 401
    trainer.delete_project(other.id)
    trainer.delete_project(project.id)


# =========================================================================== predictions, publishing
@pytest.mark.slow
def test_images_from_predictions_and_publishing(server):
    trainer, predictor = server.trainer(), server.predictor()
    project = trainer.create_project("retrain")
    red, green = trainer.create_tag(project.id, "red"), trainer.create_tag(project.id, "green")
    for tag, colour, seed in ((red, RED, 21), (green, GREEN, 22)):
        entries = [ImageFileCreateEntry(name=f"{n}.png", contents=b, tag_ids=[tag.id])
                   for n, b in enumerate(colour_images(6, colour, seed))]
        assert trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=entries)).is_batch_successful
    iteration = wait_trained(trainer, project.id, trainer.train_project(project.id))
    assert iteration.status == "Completed", iteration.training_error_details
    resource = "/subscriptions/1111/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/my-pred"
    assert trainer.publish_iteration(project.id, iteration.id, "prod", resource) is True
    assert trainer.get_iteration(project.id, iteration.id).original_publish_resource_id == resource

    new_red = colour_images(1, RED, 23)[0]
    stored = predictor.classify_image(project.id, "prod", new_red)
    unstored = predictor.classify_image_with_no_store(project.id, "prod", colour_images(1, RED, 24)[0])
    assert b"".join(trainer.get_artifact(project.id, f"predictions/{stored.id}")) == new_red

    before = trainer.get_tagged_image_count(project.id)
    summary = trainer.create_images_from_predictions(project.id, ImageIdCreateBatch(
        images=[ImageIdCreateEntry(id=stored.id), ImageIdCreateEntry(id=unstored.id)], tag_ids=[red.id],
        metadata={"from": "prediction"}))
    assert [i.status for i in summary.images] == ["OK", "ErrorSource"] and not summary.is_batch_successful
    added = summary.images[0].image
    assert [t.tag_id for t in added.tags] == [red.id] and added.metadata == {"from": "prediction"}
    assert trainer.get_tagged_image_count(project.id) == before + 1
    assert b"".join(trainer.get_artifact(project.id, f"images/{added.id}")) == new_red
    status, code, _ = cv_error(trainer.create_images_from_predictions, str(uuid.uuid4()),
                               ImageIdCreateBatch(images=[ImageIdCreateEntry(id=stored.id)]))
    assert (status, code) == (404, "NotFound")

    status, code, _ = cv_error(trainer.delete_project, project.id)
    assert (status, code) == (400, "BadRequestIterationIsPublished")
    assert trainer.get_project(project.id).id == project.id
    trainer.unpublish_iteration(project.id, iteration.id)
    assert trainer.get_iteration(project.id, iteration.id).original_publish_resource_id is None
    trainer.delete_project(project.id)


# =========================================================================== URL uploads
def test_url_upload_failures_name_their_cause(server, image_host):
    trainer = server.trainer()
    project = trainer.create_project("urls")
    base = f"http://127.0.0.1:{image_host.port}"
    urls = [f"{base}/red.png", f"{base}/missing.png", f"{base}/page.html", f"{base}/huge.png",
            "http://example.invalid/cat.png", "ftp://127.0.0.1/x.png"]
    # The SDK's ImageCreateResult has a status only; the cause is in each result's "message" on the wire.
    raw = trainer.create_images_from_urls(project.id, ImageUrlCreateBatch(
        images=[ImageUrlCreateEntry(url=u) for u in urls]), raw=True)
    assert raw.response.status_code == 207 and [i.status for i in raw.output.images][0] == "OK"
    got = [(i["status"], i["message"]) for i in raw.response.json()["images"]]
    assert got[0][0] == "OK"
    assert got[1][0] == "ErrorSource" and "HTTP 404" in got[1][1]
    assert got[2][0] == "ErrorImageFormat" and "not an image" in got[2][1]
    assert got[3][0] == "ErrorImageSize" and "6 MB" in got[3][1]
    assert got[4][0] == "ErrorSource" and "example.invalid" in got[4][1] and "allowed" in got[4][1]
    assert got[5][0] == "ErrorSource" and "http" in got[5][1]
    assert trainer.get_image_count(project.id) == 1
    trainer.delete_project(project.id)
