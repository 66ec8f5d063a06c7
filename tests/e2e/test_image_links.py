"""Image links (originalImageUri, resizedImageUri, thumbnailUri) through the official Azure SDK 3.1.1 against real
`cvbot serve` processes: the links the SDK returns are fetched without any key, as Azure's SAS links are."""
from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from tests.helpers import colour_images, env_with, free_port

sdk = pytest.importorskip("azure.cognitiveservices.vision.customvision.training")
from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient  # noqa: E402
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient  # noqa: E402
from azure.cognitiveservices.vision.customvision.training.models import (  # noqa: E402
    ImageFileCreateBatch,
    ImageFileCreateEntry,
)
from msrest.authentication import ApiKeyCredentials  # noqa: E402

CVBOT = str(Path(sys.executable).parent / "cvbot")
TRAINING_KEY = "test-training-" + uuid.uuid4().hex
PREDICTION_KEY = "test-prediction-" + uuid.uuid4().hex
RED, GREEN = (220, 30, 30), (30, 200, 40)
URI_FIELDS = ("original_image_uri", "resized_image_uri", "thumbnail_uri")


class Server:
    def __init__(self, url: str, env: dict, proc: subprocess.Popen, log: Path):
        self.url, self.env, self.proc, self.log = url, env, proc, log

    def trainer(self, key: str = TRAINING_KEY) -> CustomVisionTrainingClient:
        return CustomVisionTrainingClient(self.url, ApiKeyCredentials(in_headers={"Training-key": key}))

    def predictor(self) -> CustomVisionPredictionClient:
        return CustomVisionPredictionClient(self.url, ApiKeyCredentials(in_headers={"Prediction-key": PREDICTION_KEY}))


def start(tmp: Path, data: Path, model_dir, name: str, **extra) -> Server:
    port = free_port()
    env = env_with(tmp, CVBOT_MODEL_DIR=model_dir, CVBOT_TRAINING_KEY=TRAINING_KEY,
                   CVBOT_PREDICTION_KEY=PREDICTION_KEY, **extra)
    env["CVBOT_DATA_DIR"] = str(data)
    log = tmp / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([CVBOT, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            return Server(url, env, proc, log)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"cvbot serve ({name}) did not start:\n" + log.read_text())
            time.sleep(0.2)


def stop(server: Server) -> None:
    server.proc.terminate()
    server.proc.wait(timeout=30)
    text = server.log.read_text()
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", text)
    errors = [r for r in records if " ERROR " in r.split("\n")[0]]
    assert not errors, "\n".join(errors)[-4000:]
    assert TRAINING_KEY not in text and PREDICTION_KEY not in text


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("links")
    return tmp, tmp / "data"


@pytest.fixture(scope="module")
def server(store, model_dir):
    tmp, data = store
    s = start(tmp, data, model_dir, "first")
    yield s
    stop(s)


def fetch(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """GET without any key."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def blocks_png(w: int, h: int, seed: int) -> bytes:
    """A large image that stays small as PNG (random colour blocks of 100 x 100 pixels)."""
    arr = np.random.default_rng(seed).integers(0, 255, (h // 100, w // 100, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).resize((w, h), Image.Resampling.NEAREST).save(buf, "PNG")
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def with_query(url: str, **changes) -> str:
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    q.update(changes)
    return parts._replace(query="&".join(f"{k}={v}" for k, v in q.items())).geturl()


def assert_denied(url: str) -> None:
    status, headers, body = fetch(url)
    assert status == 403, (status, body[:200])
    assert headers["Content-Type"].startswith("application/json") and b"not valid or has expired" in body
    path = urlsplit(url).path
    assert path.rsplit("/", 2)[-2].encode() not in body  # nothing about the image, not even its id


def test_sdk_links_download_the_original_resized_and_thumbnail(server):
    trainer = server.trainer()
    project = trainer.create_project("Links")
    tag = trainer.create_tag(project.id, "noise")
    wide, small = blocks_png(2400, 1200, 1), colour_images(1, RED, 5, size=(120, 90))[0]
    created = trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=[
        ImageFileCreateEntry(name="wide.png", contents=wide, tag_ids=[tag.id]),
        ImageFileCreateEntry(name="small.png", contents=small)]))
    assert created.is_batch_successful
    assert all(getattr(r.image, f) for r in created.images for f in URI_FIELDS)  # already in the upload's answer

    [tagged] = trainer.get_tagged_images(project.id)
    [untagged] = trainer.get_untagged_images(project.id)
    by_id = {i.id: i for i in trainer.get_images_by_ids(project.id, [tagged.id, untagged.id])}
    for image, data in ((tagged, wide), (untagged, small)):
        assert all(getattr(image, f).startswith(server.url + "/customvision/images/image/" + image.id + "/")
                   for f in URI_FIELDS)
        assert by_id[image.id].original_image_uri.startswith(server.url)
        status, headers, body = fetch(image.original_image_uri)
        assert status == 200 and sha(body) == sha(data)
        assert headers["Content-Type"] == "image/png" and headers["ETag"] == f'"{sha(data)}"'
        assert "max-age=" in headers["Cache-Control"] and "private" in headers["Cache-Control"]
        assert fetch(image.original_image_uri, {"If-None-Match": headers["ETag"]})[0] == 304

    expected = {tagged.id: {"resized": (1600, 800), "thumbnail": (200, 100)},
                untagged.id: {"resized": (120, 90), "thumbnail": (120, 90)}}
    for image in (tagged, untagged):
        for variant, uri in (("resized", image.resized_image_uri), ("thumbnail", image.thumbnail_uri)):
            status, headers, body = fetch(uri)
            assert status == 200 and headers["Content-Type"] == "image/jpeg"
            img = Image.open(io.BytesIO(body))
            assert (img.format, img.size) == ("JPEG", expected[image.id][variant])
            assert headers["ETag"] == f'"{sha(body)}"'
            assert fetch(uri, {"If-None-Match": headers["ETag"]})[0] == 304
            again = fetch(uri)  # made once, then served from the cache: the same bytes
            assert again[0] == 200 and again[2] == body
    trainer.delete_project(project.id)


def test_tampered_links_are_refused_and_reveal_nothing(server):
    trainer = server.trainer()
    mine, other = trainer.create_project("Mine"), trainer.create_project("Other")
    trainer.create_images_from_data(mine.id, colour_images(1, RED, 11)[0])
    trainer.create_images_from_data(other.id, colour_images(1, GREEN, 12)[0])
    [image], [theirs] = trainer.get_images(mine.id), trainer.get_images(other.id)
    url = image.original_image_uri
    assert fetch(url)[0] == 200
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    exp = parse_qs(urlsplit(url).query)["exp"][0]
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    for bad in (with_query(url, sig=flipped), with_query(url, sig=""), with_query(url, exp=str(int(exp) + 60)),
                url.split("?")[0], url.replace("/original?", "/resized?"), url.replace("/image/", "/prediction/"),
                url.replace(image.id, theirs.id),  # another project's image with my link's signature
                with_query(url, sig=sig.upper())):
        assert_denied(bad)
    # a well-signed link to an image deleted since: gone, not forbidden
    trainer.delete_images(mine.id, [image.id])
    status, _, body = fetch(url)
    assert status == 404 and image.id.encode() not in body
    for p in (mine, other):
        trainer.delete_project(p.id)


def test_a_link_never_reaches_another_workspaces_image(server):
    from core.usecases import Scope
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings

    container = bootstrap(Settings.from_env(server.env), recover=False)
    try:
        keys = container.usecases(Scope.of("T0LINKS")).channels.keys()
    finally:
        container.close()
    team, me = server.trainer(keys.training_key), server.trainer()
    theirs_p, mine_p = team.create_project("Team links"), me.create_project("My links")
    team.create_images_from_data(theirs_p.id, colour_images(1, GREEN, 21)[0])
    me.create_images_from_data(mine_p.id, colour_images(1, RED, 22)[0])
    [theirs], [mine] = team.get_images(theirs_p.id), me.get_images(mine_p.id)
    for f in URI_FIELDS:
        assert_denied(getattr(mine, f).replace(mine.id, theirs.id))
        assert_denied(getattr(theirs, f).replace(theirs.id, mine.id))
    assert fetch(theirs.original_image_uri)[0] == 200  # the team's own link works (a link is its capability)
    team.delete_project(theirs_p.id)
    me.delete_project(mine_p.id)


def test_stored_predictions_have_links_scoped_to_the_prediction(server):
    trainer, predictor = server.trainer(), server.predictor()
    project = trainer.create_project("Predicted links")
    red, green = trainer.create_tag(project.id, "red"), trainer.create_tag(project.id, "green")
    entries = [ImageFileCreateEntry(name=f"{n}{i}.png", contents=b, tag_ids=[t.id])
               for n, t, c, seed in (("r", red, RED, 31), ("g", green, GREEN, 32))
               for i, b in enumerate(colour_images(5, c, seed))]
    assert trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=entries)).is_batch_successful
    iteration = trainer.train_project(project.id)
    deadline = time.monotonic() + 180
    while iteration.status == "Training" and time.monotonic() < deadline:
        time.sleep(0.3)
        iteration = trainer.get_iteration(project.id, iteration.id)
    assert iteration.status == "Completed", iteration.training_error_details
    trainer.publish_iteration(project.id, iteration.id, "links", "resource")
    uploaded = {sha(e.contents): e for e in entries}
    performances = trainer.get_image_performances(project.id, iteration.id, take=20)
    assert len(performances) == 10
    for perf in performances:  # image performances link to their training image (the SDK reads two links)
        assert perf.image_uri.startswith(f"{server.url}/customvision/images/image/{perf.id}/original?")
        status, _, body = fetch(perf.image_uri)
        assert status == 200 and sha(body) in uploaded
        status, headers, body = fetch(perf.thumbnail_uri)
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
    query = colour_images(1, RED, 33, size=(300, 100))[0]
    stored = predictor.classify_image(project.id, "links", query)
    predictor.classify_image_with_no_store(project.id, "links", colour_images(1, GREEN, 34)[0])
    [found] = trainer.query_predictions(project.id, {"maxCount": 10}).results
    assert found.id == stored.id
    for f in URI_FIELDS:
        assert getattr(found, f).startswith(f"{server.url}/customvision/images/prediction/{stored.id}/")
    status, headers, body = fetch(found.original_image_uri)
    assert status == 200 and sha(body) == sha(query) and headers["Content-Type"] == "image/png"
    status, headers, body = fetch(found.thumbnail_uri)
    assert status == 200 and Image.open(io.BytesIO(body)).size == (200, 67)
    # the prediction's link names the prediction, not the bytes: it reaches no training image
    [image] = trainer.get_images(project.id, take=1)
    assert_denied(found.original_image_uri.replace(stored.id, image.id))
    trainer.delete_prediction(project.id, [stored.id])
    assert fetch(found.original_image_uri)[0] == 404
    trainer.unpublish_iteration(project.id, iteration.id)
    trainer.delete_project(project.id)


def test_a_second_process_signs_alike_and_short_lifetimes_expire(server, store, model_dir):
    """Two servers on one store, no CVBOT_SECRET_KEY: the key the first made is in the database, so each accepts the
    other's links; the second's links live CVBOT_LINK_TTL=2 seconds."""
    tmp, data = store
    second = start(tmp, data, model_dir, "second", CVBOT_LINK_TTL=2)
    try:
        trainer = server.trainer()
        project = trainer.create_project("Two processes")
        upload = colour_images(1, RED, 41)[0]
        trainer.create_images_from_data(project.id, upload)
        [first_view] = trainer.get_images(project.id)
        [second_view] = second.trainer().get_images(project.id)
        assert first_view.id == second_view.id
        first_link = first_view.original_image_uri
        short_link = second_view.original_image_uri
        other_host = first_link.replace(server.url, second.url)
        assert fetch(other_host)[2] == upload  # signed by the first, accepted by the second
        assert fetch(short_link.replace(second.url, server.url))[2] == upload
        exp = int(parse_qs(urlsplit(short_link).query)["exp"][0])
        assert exp - time.time() <= 3
        time.sleep(max(0.0, exp - time.time()) + 1.2)
        assert_denied(short_link)
        assert_denied(short_link.replace(second.url, server.url))
        assert fetch(first_link)[0] == 200  # the first server's hour-long link still works
        trainer.delete_project(project.id)
    finally:
        stop(second)
