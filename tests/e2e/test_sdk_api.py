"""The official Azure Custom Vision SDK (azure-cognitiveservices-vision-customvision 3.1.1), unchanged but for the
endpoint and keys, against a real `cvbot serve` on a loopback port: real SQLite, real images, real backbone."""
from __future__ import annotations

import http.server
import io
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import TUXPAINT, colour_images, env_with, free_port, png_bytes

sdk = pytest.importorskip("azure.cognitiveservices.vision.customvision.training")
from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient  # noqa: E402
from azure.cognitiveservices.vision.customvision.prediction.models import (  # noqa: E402
    CustomVisionErrorException as PredictionError,
)
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient  # noqa: E402
from azure.cognitiveservices.vision.customvision.training.models import (  # noqa: E402
    CustomVisionErrorException,
    ImageFileCreateBatch,
    ImageFileCreateEntry,
    ImageTagCreateEntry,
    ImageUrlCreateBatch,
    ImageUrlCreateEntry,
)
from msrest.authentication import ApiKeyCredentials  # noqa: E402

CVBOT = str(Path(sys.executable).parent / "cvbot")
TRAINING_KEY = "test-training-" + uuid.uuid4().hex
PREDICTION_KEY = "test-prediction-" + uuid.uuid4().hex
COMPACT = "0732100f-1a38-4e49-a514-c9b44c697ab5"
RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (30, 40, 220)


class Server:
    def __init__(self, url: str, data_dir: Path, env: dict, proc: subprocess.Popen):
        self.url, self.data_dir, self.env, self.proc = url, data_dir, env, proc

    def trainer(self, key: str = TRAINING_KEY, header: str = "Training-key") -> CustomVisionTrainingClient:
        return CustomVisionTrainingClient(self.url, ApiKeyCredentials(in_headers={header: key}))

    def predictor(self, key: str = PREDICTION_KEY) -> CustomVisionPredictionClient:
        return CustomVisionPredictionClient(self.url, ApiKeyCredentials(in_headers={"Prediction-key": key}))

    def raw(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


class ImageHost:
    """A tiny HTTP server on loopback that serves given bytes at /<name>."""

    def __init__(self, files: dict[str, bytes]):
        outer = files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                data = outer.get(self.path.lstrip("/"))
                self.send_response(200 if data else 404)
                self.end_headers()
                if data:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def image_host():
    host = ImageHost({"red.png": colour_images(1, RED, 77)[0], "blue.png": colour_images(1, BLUE, 78)[0]})
    yield host
    host.httpd.shutdown()


def start_serve(port: int, env: dict, log) -> tuple[subprocess.Popen, str]:
    """`cvbot serve` on a loopback port, once it answers /healthz (fails the test with its log if it does not)."""
    proc = subprocess.Popen([CVBOT, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail("cvbot serve did not start:\n" + log.read())
            time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, image_host):
    tmp = tmp_path_factory.mktemp("api")
    port = free_port()
    env = env_with(tmp, CVBOT_MODEL_DIR=model_dir, CVBOT_TRAINING_KEY=TRAINING_KEY,
                   CVBOT_PREDICTION_KEY=PREDICTION_KEY, CVBOT_ALLOWED_URL_HOSTS=f"127.0.0.1:{image_host.port}")
    with open(tmp / "server.log", "w+") as log:
        proc, url = start_serve(port, env, log)
        yield Server(url, tmp / "data", env, proc)
        proc.terminate()
        proc.wait(timeout=30)
        log.seek(0)
        text = log.read()
    # No request may have crashed a handler (aiohttp's own reports of unparseable requests are the client's
    # fault), and no key may ever reach the log.
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", text)
    errors = [r for r in records if " ERROR " in r.split("\n")[0]
              and not (" aiohttp.server: " in r and "aiohttp.http_exceptions." in r)]
    assert not errors, "\n".join(errors)[-4000:]
    assert TRAINING_KEY not in text and PREDICTION_KEY not in text


def cv_error(fn, *args, **kwargs) -> tuple[int, str, str]:
    """(HTTP status, Custom Vision code, message) of a call that must fail."""
    with pytest.raises((CustomVisionErrorException, PredictionError)) as info:
        fn(*args, **kwargs)
    e = info.value
    return e.response.status_code, getattr(e.error, "code", None), e.message


def wait_trained(trainer, project_id, iteration, timeout=180):
    deadline = time.monotonic() + timeout
    seen = {iteration.status}
    while iteration.status == "Training" and time.monotonic() < deadline:
        time.sleep(0.3)
        iteration = trainer.get_iteration(project_id, iteration.id)
        seen.add(iteration.status)
    assert seen <= {"Training", "Completed", "Failed"}, seen
    return iteration


def stamps(category: str) -> list[bytes]:
    files = sorted((TUXPAINT / category).rglob("*.png"))
    return [f.read_bytes() for f in files]


def noise_png(side: int, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


# =========================================================================== the quickstart flow
@pytest.mark.slow
@pytest.mark.skipif(not TUXPAINT.is_dir(), reason="tuxpaint stamps not installed")
def test_quickstart_flow_with_real_images(server, image_host):
    trainer, predictor = server.trainer(), server.predictor()
    categories = ("animals", "food", "vehicles")
    data = {c: stamps(c)[::2][:18] for c in categories}  # every other stamp: fewer near-duplicates
    train = {c: d[:12] for c, d in data.items()}
    held_out = {c: d[12:] for c, d in data.items()}

    compact = next(d for d in trainer.get_domains() if d.type == "Classification" and d.name == "General (compact)")
    assert compact.id == COMPACT and compact.exportable and "ONNX" in compact.exportable_platforms
    project = trainer.create_project("Stamps quickstart", description="tuxpaint", domain_id=compact.id)
    assert project.settings.domain_id == COMPACT and project.settings.classification_type == "Multiclass"
    tags = {c: trainer.create_tag(project.id, c) for c in categories}

    # Upload style 1: one raw image per call, tags in the query (as the SDK quickstart does).
    for blob in train["animals"]:
        result = trainer.create_images_from_data(project.id, blob, [tags["animals"].id])
        assert result.is_batch_successful and result.images[0].status == "OK"
    # Upload style 2: JSON batches of base64 files with per-image tags.
    entries = [ImageFileCreateEntry(name=f"{c}{i}.png", contents=blob, tag_ids=[tags[c].id])
               for c in ("food", "vehicles") for i, blob in enumerate(train[c])]
    result = trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=entries))
    assert result.is_batch_successful, [i.status for i in result.images]
    assert len(result.images) == 24 and all(i.image.tags[0].tag_id for i in result.images)

    assert {t.name: t.image_count for t in trainer.get_tags(project.id)} == {c: 12 for c in categories}
    assert trainer.get_tagged_image_count(project.id) == 36
    assert trainer.get_untagged_image_count(project.id) == 0

    iteration = trainer.train_project(project.id)
    assert iteration.status == "Training" and iteration.domain_id == COMPACT
    iteration = wait_trained(trainer, project.id, iteration)
    assert iteration.status == "Completed", iteration.training_error_details
    assert iteration.exportable and iteration.trained_at is not None

    perf = trainer.get_iteration_performance(project.id, iteration.id, threshold=0.5)
    assert {t.name for t in perf.per_tag_performance} == set(categories)
    for t in perf.per_tag_performance:
        for v in (t.precision, t.recall, t.average_precision, t.precision_std_deviation, t.recall_std_deviation):
            assert v is not None and 0.0 <= v <= 1.0
    assert 0.5 <= perf.precision <= 1.0 and 0.5 <= perf.average_precision <= 1.0
    strict = trainer.get_iteration_performance(project.id, iteration.id, threshold=0.99)
    assert strict.recall <= perf.recall  # a higher threshold can only lose recall

    per_image = trainer.get_image_performances(project.id, iteration.id, take=100)
    assert len(per_image) == 36 == trainer.get_image_performance_count(project.id, iteration.id)
    assert all(abs(sum(p.probability for p in img.predictions) - 1) < 1e-3 for img in per_image)
    only_food = trainer.get_image_performances(project.id, iteration.id, tag_ids=[tags["food"].id])
    assert len(only_food) == 12 and all(img.tags[0].tag_name == "food" for img in only_food)

    # Nothing changed: Custom Vision refuses to train again unless forced.
    status, code, message = cv_error(trainer.train_project, project.id)
    assert (status, code) == (400, "BadRequestTrainingNotNeeded")

    assert trainer.publish_iteration(project.id, iteration.id, "stamps", "prediction-resource-id") is True
    assert trainer.get_iteration(project.id, iteration.id).publish_name == "stamps"

    right = total = 0
    for c, blobs in held_out.items():
        for blob in blobs:
            res = predictor.classify_image_with_no_store(project.id, "stamps", blob)
            assert len(res.predictions) == 3 and abs(sum(p.probability for p in res.predictions) - 1) < 1e-3
            assert res.predictions == sorted(res.predictions, key=lambda p: -p.probability)
            right += res.predictions[0].tag_name == c
            total += 1
    print(f"held-out stamps: {right}/{total} right")
    assert right / total >= 0.7, f"{right}/{total} held-out stamps right"

    # The stored variant keeps the prediction; the no-store one above kept nothing.
    stored = predictor.classify_image(project.id, "stamps", held_out["food"][0])
    assert stored.iteration == iteration.id and stored.project == project.id
    found = trainer.query_predictions(project.id, {"maxCount": 50}).results
    assert [p.id for p in found] == [stored.id]

    # The Slack bot's default iteration answers under the name "default".
    default = predictor.classify_image_with_no_store(project.id, "default", held_out["food"][0])
    assert default.iteration == iteration.id

    # URLs are fetched only from allowed hosts (127.0.0.1 here), never from others.
    blue = f"http://127.0.0.1:{image_host.port}/blue.png"
    by_url = predictor.classify_image_url_with_no_store(project.id, "stamps", url=blue)
    assert by_url.iteration == iteration.id and len(by_url.predictions) == 3
    status, code, message = cv_error(predictor.classify_image_url, project.id, "stamps",
                                     url=f"http://localhost:{image_host.port}/blue.png")
    assert (status, code) == (400, "BadRequestImageUrl") and "allowed" in message

    quick = trainer.quick_test_image(project.id, held_out["vehicles"][0], iteration_id=iteration.id, store=False)
    assert quick.iteration == iteration.id and {p.tag_name for p in quick.predictions} == set(categories)
    assert quick.predictions[0].probability >= quick.predictions[-1].probability

    trainer.delete_prediction(project.id, [stored.id])
    assert trainer.query_predictions(project.id, {}).results == []

    # Force a second training, then retire the first iteration as Custom Vision requires: unpublish, delete.
    second = wait_trained(trainer, project.id, trainer.train_project(project.id, force_train=True))
    assert second.status == "Completed" and second.id != iteration.id
    status, code, _ = cv_error(trainer.delete_iteration, project.id, iteration.id)
    assert (status, code) == (400, "BadRequestIterationIsPublished")
    trainer.unpublish_iteration(project.id, iteration.id)
    status, code, _ = cv_error(predictor.classify_image, project.id, "stamps", held_out["food"][0])
    assert status == 404 and code == "NotFound"
    trainer.delete_iteration(project.id, iteration.id)
    assert [i.id for i in trainer.get_iterations(project.id)] == [second.id]
    # The default role moved to the remaining iteration.
    assert predictor.classify_image_with_no_store(project.id, "default", held_out["food"][0]).iteration == second.id

    trainer.delete_project(project.id)
    status, code, _ = cv_error(trainer.get_project, project.id)
    assert (status, code) == (404, "NotFound")
    assert project.id not in {p.id for p in trainer.get_projects()}


# =========================================================================== projects, tags, images
def test_project_tag_and_image_management(server):
    trainer = server.trainer()
    project = trainer.create_project("Colours admin", classification_type="Multilabel")
    # Without a domainId the server's default domain (Compact) is used.
    assert project.settings.domain_id == COMPACT and project.settings.classification_type == "Multilabel"
    assert trainer.get_project(project.id).name == "Colours admin"

    project.name, project.description = "Colours", "renamed"
    project.settings.classification_type = "Multiclass"
    updated = trainer.update_project(project.id, project)
    assert (updated.name, updated.description, updated.settings.classification_type) == ("Colours", "renamed",
                                                                                          "Multiclass")
    assert trainer.get_project(project.id).name == "Colours"

    red = trainer.create_tag(project.id, "red", description="warm")
    blue = trainer.create_tag(project.id, "blue")
    negative = trainer.create_tag(project.id, "Nothing", type="Negative")
    assert (red.type, red.description, negative.type) == ("Regular", "warm", "Negative")
    status, code, _ = cv_error(trainer.create_tag, project.id, "RED")
    assert (status, code) == (400, "BadRequestTagNameNotUnique")
    red.name = "crimson"
    assert trainer.update_tag(project.id, red.id, red).name == "crimson"
    assert trainer.get_tag(project.id, red.id).name == "crimson"

    reds = colour_images(3, RED, 11)
    summary = trainer.create_images_from_data(project.id, reds[0], [red.id])
    assert summary.is_batch_successful
    entries = [ImageFileCreateEntry(name="r1.png", contents=reds[1], tag_ids=[red.id]),
               ImageFileCreateEntry(name="r2.png", contents=reds[2]),
               ImageFileCreateEntry(name="b0.png", contents=colour_images(1, BLUE, 12)[0], tag_ids=[blue.id]),
               ImageFileCreateEntry(name="both.png", contents=colour_images(1, GREEN, 13)[0],
                                    tag_ids=[negative.id, blue.id])]
    summary = trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=entries))
    assert [i.status for i in summary.images] == ["OK", "OK", "OK", "ErrorNegativeAndRegularTagOnSameImage"]
    assert summary.is_batch_successful is False

    assert trainer.get_image_count(project.id) == 4
    assert trainer.get_untagged_image_count(project.id) == 1
    assert trainer.get_tagged_image_count(project.id, tag_ids=[red.id]) == 2
    untagged = trainer.get_untagged_images(project.id)
    assert len(untagged) == 1 and not untagged[0].tags

    newest = trainer.get_images(project.id, take=2)
    oldest = trainer.get_images(project.id, take=2, order_by="Oldest")
    everything = trainer.get_images(project.id, take=10)
    assert len(newest) == 2 and [i.id for i in everything][:2] == [i.id for i in newest]
    assert [i.id for i in oldest] == [i.id for i in everything][::-1][:2]
    assert [i.id for i in trainer.get_images(project.id, take=2, skip=2)] == [i.id for i in everything][2:4]

    # Tag the untagged image, then untag it again.
    tagged = next(i for i in everything if i.tags)
    created = trainer.create_image_tags(project.id, [
        ImageTagCreateEntry(image_id=untagged[0].id, tag_id=blue.id),
        ImageTagCreateEntry(image_id=tagged.id, tag_id=tagged.tags[0].tag_id)])
    assert len(created.created) == 1 and len(created.duplicated) == 1
    assert trainer.get_untagged_image_count(project.id) == 0
    # The SDK allows 256 ids in one query string (~10 kB of URL); unknown ones are left out.
    by_id = trainer.get_images_by_ids(project.id, image_ids=[untagged[0].id] + [str(uuid.uuid4()) for _ in range(255)])
    assert len(by_id) == 1 and [t.tag_name for t in by_id[0].tags] == ["blue"]
    trainer.delete_image_tags(project.id, [untagged[0].id], [blue.id])
    assert trainer.get_untagged_image_count(project.id) == 1
    assert {t.name: t.image_count for t in trainer.get_tags(project.id)} == {"crimson": 2, "blue": 1, "Nothing": 0}

    trainer.delete_images(project.id, image_ids=[untagged[0].id])
    assert trainer.get_image_count(project.id) == 3
    trainer.delete_tag(project.id, blue.id)
    assert {t.name for t in trainer.get_tags(project.id)} == {"crimson", "Nothing"}
    trainer.delete_images(project.id, all_images=True)
    assert trainer.get_image_count(project.id) == 0
    trainer.delete_project(project.id)


def test_duplicate_upload_is_reported_and_stored_once(server):
    trainer = server.trainer()
    project = trainer.create_project("Dups")
    tag = trainer.create_tag(project.id, "red")
    blob = colour_images(1, RED, 21)[0]
    first = trainer.create_images_from_data(project.id, blob, [tag.id])
    again = trainer.create_images_from_data(project.id, blob, [tag.id])
    assert first.images[0].status == "OK"
    assert again.images[0].status == "OKDuplicate" and again.is_batch_successful is False
    assert again.images[0].image.id == first.images[0].image.id
    batch = trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=[
        ImageFileCreateEntry(name="a.png", contents=blob), ImageFileCreateEntry(name="b.png", contents=blob)]))
    assert [i.status for i in batch.images] == ["OKDuplicate", "OKDuplicate"]
    assert trainer.get_image_count(project.id) == 1
    trainer.delete_project(project.id)


def test_corrupt_and_oversize_images_fail_alone(server):
    trainer, predictor = server.trainer(), server.predictor()
    project = trainer.create_project("Bad images")
    good = png_bytes((1, 2, 3))
    corrupt = png_bytes((4, 5, 6))[:60]  # a truncated PNG
    oversize = noise_png(1500)  # ~6.4 MB: over the 6 MB training limit
    assert len(oversize) > 6 * 1024 * 1024
    summary = trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=[
        ImageFileCreateEntry(name="good.png", contents=good),
        ImageFileCreateEntry(name="corrupt.png", contents=corrupt),
        ImageFileCreateEntry(name="big.png", contents=oversize),
        ImageFileCreateEntry(name="text.png", contents=b"hello, not an image")]))
    statuses = {i.source_url: i.status for i in summary.images}
    assert statuses == {"good.png": "OK", "corrupt.png": "ErrorImageFormat", "big.png": "ErrorImageSize",
                        "text.png": "ErrorImageFormat"}
    assert summary.is_batch_successful is False
    raw = trainer.create_images_from_data(project.id, oversize, raw=True)
    assert raw.response.status_code == 207 and raw.output.images[0].status == "ErrorImageSize"
    assert trainer.get_image_count(project.id) == 1

    # Prediction's limit is 4 MB: refused before any model runs.
    status, code, message = cv_error(predictor.classify_image, project.id, "default", noise_png(1200, 1))
    assert (status, code) == (400, "BadRequestImageSizeBytes") and "MB" in message
    status, code, _ = cv_error(predictor.classify_image, project.id, "default", b"not an image at all")
    assert (status, code) == (400, "BadRequestImageFormat")
    trainer.delete_project(project.id)


def test_too_few_images_fail_validation_naming_the_tags(server):
    trainer = server.trainer()
    project = trainer.create_project("Too few")
    red, green = trainer.create_tag(project.id, "red"), trainer.create_tag(project.id, "green")
    for blob in colour_images(5, RED, 31):
        trainer.create_images_from_data(project.id, blob, [red.id])
    for blob in colour_images(2, GREEN, 32):
        trainer.create_images_from_data(project.id, blob, [green.id])
    status, code, message = cv_error(trainer.train_project, project.id)
    assert (status, code) == (400, "BadRequestTrainingValidationFailed")
    assert "green" in message and "red: 5" in message
    assert trainer.get_iterations(project.id) == []
    trainer.delete_project(project.id)


def test_unknown_ids_are_not_found(server):
    trainer, predictor = server.trainer(), server.predictor()
    missing = str(uuid.uuid4())
    project = trainer.create_project("Lookups")
    calls = [
        (trainer.get_project, missing), (trainer.delete_project, missing), (trainer.get_tags, missing),
        (trainer.get_tag, project.id, missing), (trainer.delete_tag, project.id, missing),
        (trainer.get_iteration, project.id, missing), (trainer.delete_iteration, project.id, missing),
        (trainer.get_iteration_performance, project.id, missing), (trainer.get_domain, missing),
        (trainer.publish_iteration, project.id, missing, "x", "y"),
        (trainer.create_images_from_data, missing, png_bytes()),
        (predictor.classify_image, missing, "prod", png_bytes()),
        (predictor.classify_image, project.id, "never-published", png_bytes()),
    ]
    for fn, *args in calls:
        status, code, _ = cv_error(fn, *args)
        assert (status, code[:8]) == (404, "NotFound"), (fn.__name__, status, code)
    # A tag id that is not in the project is a per-image error, not a stored image.
    summary = trainer.create_images_from_data(project.id, png_bytes((9, 9, 9)), [missing])
    assert summary.images[0].status == "ErrorInvalidTag" and trainer.get_image_count(project.id) == 0
    trainer.delete_project(project.id)


# =========================================================================== keys
def _projects(server) -> set[str]:
    return {p.name for p in server.trainer().get_projects()}


def test_missing_or_wrong_key_is_401_and_changes_nothing(server):
    before = _projects(server)
    for headers in ({}, {"Training-Key": "wrong"}, {"Training-Key": ""}):
        status, body = server.raw("POST", "/customvision/v3.4-preview/training/projects?name=intruder", headers)
        assert status == 401 and json.loads(body)["code"] == "Unauthorized"
    status, code, _ = cv_error(server.trainer("nope").create_project, "intruder")
    assert (status, code) == (401, "Unauthorized")
    status, _, _ = cv_error(server.predictor("nope").classify_image, str(uuid.uuid4()), "prod", png_bytes())
    assert status == 401
    assert _projects(server) == before and "intruder" not in before
    # The key headers are case-insensitive.
    status, _ = server.raw("GET", "/customvision/v3.4-preview/training/projects", {"training-key": TRAINING_KEY})
    assert status == 200


def test_prediction_key_cannot_train_tag_or_delete(server):
    trainer = server.trainer()
    project = trainer.create_project("Guarded")
    tag = trainer.create_tag(project.id, "red")
    sneaky = server.trainer(PREDICTION_KEY)
    attempts = [(sneaky.create_project, "sneaky"), (sneaky.create_tag, project.id, "blue"),
                (sneaky.train_project, project.id), (sneaky.delete_tag, project.id, tag.id),
                (sneaky.delete_project, project.id), (sneaky.get_projects,),
                (sneaky.create_images_from_data, project.id, png_bytes())]
    for fn, *args in attempts:
        assert cv_error(fn, *args)[:2] == (401, "Unauthorized"), fn.__name__
    assert [t.name for t in trainer.get_tags(project.id)] == ["red"]
    assert trainer.get_image_count(project.id) == 0 and "sneaky" not in _projects(server)
    trainer.delete_project(project.id)


def test_generated_workspace_keys_see_only_their_workspace(server):
    # An admin gets these with `/cv keys` in Slack; the same service call, on the server's own database.
    from core.usecases import Scope
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings

    container = bootstrap(Settings.from_env(server.env), recover=False)
    try:
        keys = container.usecases(Scope.of("T0TEAM")).channels.keys()
    finally:
        container.close()
    team = server.trainer(keys.training_key)
    mine = team.create_project("Team project")
    assert mine.id in {p.id for p in team.get_projects()}
    assert mine.id not in {p.id for p in server.trainer().get_projects()}
    assert cv_error(server.trainer().get_project, mine.id)[:2] == (404, "NotFound")
    assert cv_error(server.trainer(keys.prediction_key).get_projects)[0] == 401
    team.delete_project(mine.id)


# =========================================================================== surface
def test_older_api_versions_and_openapi(server):
    headers = {"Training-Key": TRAINING_KEY}
    for version in ("v3.3", "v3.0", "v3.4-preview"):
        status, body = server.raw("GET", f"/customvision/{version}/training/domains", headers)
        assert status == 200 and len([d for d in json.loads(body) if d["enabled"]]) == 6
    status, body = server.raw("POST", f"/customvision/v3.0/prediction/{uuid.uuid4()}/classify/iterations/x/image",
                              {"Prediction-Key": PREDICTION_KEY, "Content-Type": "application/octet-stream"},
                              png_bytes())
    assert status == 404 and json.loads(body)["code"] == "NotFound"
    status, body = server.raw("GET", "/customvision/v3.4-preview/training/no/such/thing", headers)
    assert status == 404 and json.loads(body)["code"] == "NotFound"
    status, body = server.raw("POST", f"/customvision/v3.1/prediction/{uuid.uuid4()}/detect/iterations/x/image",
                              {"Prediction-Key": PREDICTION_KEY}, png_bytes())
    assert status == 400 and json.loads(body)["code"] == "BadRequestNotSupported"

    status, body = server.raw("GET", "/openapi.json")
    spec = json.loads(body)
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    in_scope = {
        "get_domains", "get_domain", "create_project", "get_projects", "get_project", "update_project",
        "delete_project", "create_tag", "get_tags", "get_tag", "update_tag", "delete_tag", "create_images_from_data",
        "create_images_from_files", "get_tagged_images", "get_untagged_images", "get_tagged_image_count",
        "get_untagged_image_count", "get_images", "get_images_by_ids", "delete_images", "create_image_tags",
        "delete_image_tags", "train_project", "get_iterations", "get_iteration", "update_iteration",
        "delete_iteration", "get_iteration_performance", "get_image_performances", "publish_iteration",
        "unpublish_iteration", "classify_image", "classify_image_with_no_store", "classify_image_url",
        "quick_test_image", "query_predictions", "delete_prediction",
    }
    assert in_scope <= ops, in_scope - ops
    # Every documented operation is one the SDK has, under the path the SDK calls.
    assert all(hasattr(CustomVisionTrainingClient, o) or hasattr(CustomVisionPredictionClient, o) for o in ops)
    assert "/customvision/v3.4-preview/training/projects/{projectId}/train" in spec["paths"]
    assert "/customvision/v3.1/prediction/{projectId}/classify/iterations/{publishedName}/image" in spec["paths"]
    status, body = server.raw("GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_iteration_rename_raw_bodies_and_urls(server, image_host):
    """update_iteration renames; a raw application/octet-stream body is one image, as Custom Vision accepts;
    URL uploads and quick tests fetch only from allowed hosts; stored predictions filter by tag probability."""
    trainer = server.trainer()
    project = trainer.create_project("Rename")
    red, blue = trainer.create_tag(project.id, "red"), trainer.create_tag(project.id, "blue")
    for tag, rgb, seed in ((red, RED, 41), (blue, BLUE, 42)):
        for blob in colour_images(5, rgb, seed):
            status, body = server.raw("POST",
                                      f"/customvision/v3.3/training/projects/{project.id}/images?tagIds={tag.id}",
                                      {"Training-Key": TRAINING_KEY, "Content-Type": "application/octet-stream"}, blob)
            assert status == 200 and json.loads(body)["images"][0]["status"] == "OK"
    it = wait_trained(trainer, project.id, trainer.train_project(project.id))
    assert it.status == "Completed"
    assert trainer.update_iteration(project.id, it.id, "First try").name == "First try"
    assert trainer.get_iterations(project.id)[0].name == "First try"
    quick = trainer.quick_test_image(project.id, colour_images(1, BLUE, 43)[0])  # default iteration, stored
    assert quick.predictions[0].tag_name == "blue"
    assert [p.id for p in trainer.query_predictions(project.id, {"iterationId": it.id}).results] == [quick.id]

    allowed, refused = (f"http://{h}:{image_host.port}/red.png" for h in ("127.0.0.1", "localhost"))
    by_url = trainer.quick_test_image_url(project.id, url=allowed)
    assert by_url.predictions[0].tag_name == "red"
    summary = trainer.create_images_from_urls(project.id, ImageUrlCreateBatch(images=[
        ImageUrlCreateEntry(url=allowed, tag_ids=[red.id]), ImageUrlCreateEntry(url=refused, tag_ids=[red.id])]))
    assert [i.status for i in summary.images] == ["OK", "ErrorSource"]
    assert trainer.get_tagged_image_count(project.id, tag_ids=[red.id]) == 6

    # Stored predictions: both quick tests, filtered by a tag's probability range, paged.
    assert len(trainer.query_predictions(project.id, {}).results) == 2
    sure_red = trainer.query_predictions(project.id, {"tags": [{"id": red.id, "minThreshold": 0.9, "maxThreshold": 1}]})
    assert [p.id for p in sure_red.results] == [by_url.id]
    page = trainer.query_predictions(project.id, {"maxCount": 1, "orderBy": "Oldest"})
    assert len(page.results) == 1 and page.token.continuation
    rest = trainer.query_predictions(project.id, {"maxCount": 1, "orderBy": "Oldest",
                                                   "continuation": page.token.continuation})
    assert len(rest.results) == 1 and not rest.token.continuation
    assert {page.results[0].id, rest.results[0].id} == {quick.id, by_url.id}
    trainer.delete_project(project.id)


# =========================================================================== schemathesis
@pytest.mark.slow
def test_no_request_shape_crashes_the_server(server):
    """Schemathesis sends schema-shaped and malformed requests to every documented operation: never a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis.generation.modes import GenerationMode

    trainer = server.trainer()
    project = trainer.create_project("Fuzzed")
    tags = [trainer.create_tag(project.id, n) for n in ("red", "blue")]
    for tag, rgb, seed in ((tags[0], RED, 51), (tags[1], BLUE, 52)):
        trainer.create_images_from_files(project.id, ImageFileCreateBatch(
            images=[ImageFileCreateEntry(name=f"{seed}-{i}.png", contents=b)
                    for i, b in enumerate(colour_images(5, rgb, seed))],
            tag_ids=[tag.id]))
    iteration = wait_trained(trainer, project.id, trainer.train_project(project.id))
    assert iteration.status == "Completed"
    trainer.publish_iteration(project.id, iteration.id, "fuzz", "x")
    real = {"projectId": project.id, "iterationId": iteration.id, "tagId": tags[0].id, "publishedName": "fuzz"}
    keys = {"Training-Key": TRAINING_KEY, "Prediction-Key": PREDICTION_KEY}

    status, body = server.raw("GET", "/openapi.json")
    schema = schemathesis.openapi.from_dict(json.loads(body))
    crashes, calls, statuses = [], 0, set()
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 45

    for op in operations:
        # Deletes get random ids only, so that the other operations keep a real project to work on.
        use_real = st.booleans() if op.method.upper() != "DELETE" else st.just(False)

        @settings(max_examples=20, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)),
               use=use_real)
        def check(case, use):
            nonlocal calls
            if use and case.path_parameters:
                case.path_parameters = {k: real.get(k, v) for k, v in case.path_parameters.items()}
            response = case.call(base_url=server.url, headers=keys, timeout=60)
            calls += 1
            statuses.add(response.status_code)
            if response.status_code >= 500:
                crashes.append(f"{case.method} {case.formatted_path} -> {response.status_code} {response.text[:200]}")

        check()

    # The hostile inputs of issue #13, sent to every documented operation the schema lists: each integer query
    # parameter out of range or in non-ASCII digits, and each JSON body nested 100,000 deep or with a NaN.
    import collections
    from urllib.parse import quote

    hostile_queries = ("9223372036854775808", "\u00b2", "1" * 5000, "1e400", "NaN")
    hostile_bodies = (b"[" * 100_000, b'{"maxCount": NaN, "continuation": "\xc2\xb2"}', b'{"minThreshold": 1e400}')
    for op in operations:
        base = op.path.format_map(collections.defaultdict(lambda: "00000000-0000-0000-0000-000000000000", real))
        ints = [p.name for p in op.query if p.definition.get("schema", {}).get("type") in ("integer", "number")]
        attempts = [f"{base}?{name}={quote(value)}" for name in ints for value in hostile_queries]
        bodies = hostile_bodies if op.body else ()
        for url, body in [(u, None) for u in attempts] + [(base, b) for b in bodies]:
            code, text = server.raw(op.method.upper(), url, {**keys, "Content-Type": "application/json"}, body)
            calls += 1
            statuses.add(code)
            if code >= 500:
                crashes.append(f"{op.method.upper()} {url[:120]} (hostile) -> {code} {text[:200]!r}")
    print(f"schemathesis: {calls} calls, statuses {sorted(statuses)}")
    assert not crashes, "\n".join(crashes[:10])
    assert calls >= 200 and {200, 400, 404} <= statuses, (calls, statuses)
    health = server.raw("GET", "/healthz")
    assert health[0] == 200


# =========================================================================== ONNX export
def _pixels(blob: bytes, size: int = 224) -> np.ndarray:
    """The preprocessing cvexport.manifest documents, written independently of cvbot: RGB on white, shorter side
    resized to `size` with Pillow's bicubic filter, centre crop, NCHW float32 in 0..255."""
    img = Image.open(io.BytesIO(blob))
    img.seek(0)
    img = img.convert("RGBA")
    img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0 if scale < 0.5 else None)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, np.float32).transpose(2, 0, 1)[None]


def _registered_exporter(platform: str):
    """The platform's exporter as the server builds it (same environment), or None when not registered."""
    from core.export import PLATFORMS, exporter
    from cvbot.config import Settings

    return exporter(platform, Settings.from_env().export_settings()) if platform in PLATFORMS else None


def _finished(trainer, project_id, iteration_id, platform, flavor, timeout=300):
    """The export of `platform` and `flavor`, once it is no longer Exporting."""
    deadline = time.monotonic() + timeout
    while True:
        export = next(e for e in trainer.get_exports(project_id, iteration_id)
                      if e.platform == platform and e.flavor == flavor)
        if export.status != "Exporting" or time.monotonic() > deadline:
            return export
        time.sleep(0.3)


@pytest.mark.slow
def test_onnx_export_gives_the_servers_probabilities(server):
    import zipfile

    import onnxruntime as ort

    trainer, predictor = server.trainer(), server.predictor()
    project = trainer.create_project("Export me", domain_id=COMPACT)
    tags = {}
    for name, rgb, seed in (("red", RED, 61), ("green", GREEN, 62), ("blue", BLUE, 63)):
        tags[name] = trainer.create_tag(project.id, name)
        trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=[
            ImageFileCreateEntry(name=f"{name}{i}.png", contents=b) for i, b in enumerate(colour_images(6, rgb, seed))],
            tag_ids=[tags[name].id]))
    iteration = wait_trained(trainer, project.id, trainer.train_project(project.id))
    assert iteration.status == "Completed"

    # CoreML, as this server has it: not registered (Azure's unsupported-platform code), registered but its
    # converter missing here (export validation failed, saying what to install), or accepted.
    coreml = _registered_exporter("CoreML")
    if coreml is None or coreml.unavailable():
        status, code, message = cv_error(trainer.export_iteration, project.id, iteration.id, "CoreML")
        assert (status, code) == ((400, "BadRequestProjectUnsupportedExportPlatform") if coreml is None
                                  else (400, "BadRequestExportValidationFailed")), message
        assert trainer.get_exports(project.id, iteration.id) == []
    else:
        assert trainer.export_iteration(project.id, iteration.id, "CoreML").platform == "CoreML"
        assert _finished(trainer, project.id, iteration.id, "CoreML", None).status in ("Done", "Failed")
    export = trainer.export_iteration(project.id, iteration.id, "ONNX")
    assert export.platform == "ONNX" and export.flavor is None and export.status in ("Exporting", "Done")
    export = _finished(trainer, project.id, iteration.id, "ONNX", None)
    assert export.status == "Done" and export.download_uri.startswith(server.url + "/customvision/exports/")

    # The download link works without a key, as Custom Vision's do; a made-up one does not.
    with urllib.request.urlopen(export.download_uri, timeout=60) as r:
        package = zipfile.ZipFile(io.BytesIO(r.read()))
    assert set(package.namelist()) == {"model.onnx", "labels.txt", "cvexport.manifest"}
    bogus = export.download_uri.replace(export.download_uri.split("/")[-2], str(uuid.uuid4()))
    assert server.raw("GET", bogus[len(server.url):])[0] == 404
    labels = package.read("labels.txt").decode().split()
    assert sorted(labels) == ["blue", "green", "red"]
    manifest = json.loads(package.read("cvexport.manifest"))
    assert manifest["Input"]["shape"][1:] == [3, 224, 224] and manifest["ClassificationType"] == "Multiclass"

    assert manifest["Input"]["colors"] == "BGR" and manifest["Platform"] == "ONNX"
    session = ort.InferenceSession(package.read("model.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out, unknown) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name, unknown.name) == ("data", "model_output", "unknown_score")  # cvbot's extra output
    samples = colour_images(2, (200, 40, 200), 64) + colour_images(1, GREEN, 65)
    if TUXPAINT.is_dir():
        samples += stamps("food")[:2] + stamps("vehicles")[:2]  # RGBA, larger than 224: resized and composited
    worst = 0.0
    for blob in samples:
        local, local_unknown = (x[0] for x in session.run([out.name, unknown.name],
                                                          {inp.name: _pixels(blob)[:, ::-1]}))  # BGR, as Azure's
        assert 0.0 <= float(local_unknown) <= 1.0
        served = predictor.classify_image_with_no_store(project.id, "default", blob)
        by_tag = {p.tag_name: p.probability for p in served.predictions}
        assert abs(local.sum() - 1) < 1e-4
        worst = max(worst, max(abs(float(local[i]) - by_tag[name]) for i, name in enumerate(labels)))
    print(f"onnx export: {len(samples)} images, max |p_onnx - p_server| = {worst:.2e}")
    assert worst < 1e-4, worst
    # Asking again returns the finished export instead of building another.
    assert trainer.export_iteration(project.id, iteration.id, "ONNX").download_uri == export.download_uri
    assert trainer.export_iteration(project.id, iteration.id, "ONNX", "ONNX12").download_uri == export.download_uri
    assert len([e for e in trainer.get_exports(project.id, iteration.id) if e.platform == "ONNX"]) == 1
    # A flavor round-trips as Azure's SDK sends and reads it; an unknown one is refused with nothing stored.
    assert trainer.export_iteration(project.id, iteration.id, "ONNX", "OnnxFloat16").flavor == "ONNXFloat16"
    half = _finished(trainer, project.id, iteration.id, "ONNX", "ONNXFloat16")
    assert half.status == "Done" and half.download_uri != export.download_uri
    status, code, _ = cv_error(trainer.export_iteration, project.id, iteration.id, "ONNX", "TensorFlowLite")
    assert (status, code) == (400, "BadRequestExportValidationFailed")
    assert len([e for e in trainer.get_exports(project.id, iteration.id) if e.platform == "ONNX"]) == 2
    trainer.delete_project(project.id)
