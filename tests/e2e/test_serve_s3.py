"""`cvbot serve` with CVBOT_BLOB_URL=s3://… on a real S3-compatible server (SeaweedFS on loopback): upload, train
and predict through the Custom Vision SDK, the images land in the bucket (none on the local disk), an image link
serves them back; a bucket that cannot be used stops the server at start-up with what to change."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from tests.helpers import colour_images, env_with, free_port

pytest.importorskip("azure.cognitiveservices.vision.customvision.training")
from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient  # noqa: E402
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient  # noqa: E402
from azure.cognitiveservices.vision.customvision.training.models import (  # noqa: E402
    ImageFileCreateBatch,
    ImageFileCreateEntry,
)
from msrest.authentication import ApiKeyCredentials  # noqa: E402

TRAINING_KEY, PREDICTION_KEY = "t-" + uuid.uuid4().hex, "p-" + uuid.uuid4().hex
pytestmark = pytest.mark.slow


def _serve(tmp_path, model_dir, env_extra: dict) -> tuple[subprocess.Popen, str, object]:
    port = free_port()
    env = env_with(tmp_path, CVBOT_MODEL_DIR=model_dir, CVBOT_TRAINING_KEY=TRAINING_KEY,
                   CVBOT_PREDICTION_KEY=PREDICTION_KEY, CVBOT_LOG_LEVEL="INFO", **env_extra)
    log = tmp_path / f"serve-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cvbot.cli", "serve", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}", log


def _wait_healthy(proc, url, log) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("cvbot serve did not start:\n" + log.read_text())
            time.sleep(0.2)


def test_serve_keeps_images_in_the_bucket_and_trains_from_it(tmp_path, model_dir, s3_endpoint):
    prefix = f"serve-{uuid.uuid4().hex[:8]}"
    proc, url, log = _serve(tmp_path, model_dir, s3_endpoint.env(prefix=prefix))
    try:
        _wait_healthy(proc, url, log)
        trainer = CustomVisionTrainingClient(url, ApiKeyCredentials(in_headers={"Training-key": TRAINING_KEY}))
        predictor = CustomVisionPredictionClient(url, ApiKeyCredentials(in_headers={"Prediction-key": PREDICTION_KEY}))
        project = trainer.create_project("On S3")
        red, green = trainer.create_tag(project.id, "red"), trainer.create_tag(project.id, "green")
        images = {"red": colour_images(6, (220, 30, 30), 1), "green": colour_images(6, (30, 200, 40), 2)}
        batch = [ImageFileCreateEntry(name=f"{n}{i}.png", contents=data, tag_ids=[t.id])
                 for n, t in (("red", red), ("green", green)) for i, data in enumerate(images[n])]
        assert trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=batch)).is_batch_successful
        iteration = trainer.train_project(project.id)
        deadline = time.monotonic() + 180
        while iteration.status not in ("Completed", "Failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            iteration = trainer.get_iteration(project.id, iteration.id)
        assert iteration.status == "Completed"
        trainer.publish_iteration(project.id, iteration.id, "prod", "none")
        probe = colour_images(1, (220, 30, 30), 9)[0]
        result = predictor.classify_image(project.id, "prod", probe)
        assert result.predictions[0].tag_name == "red"

        listed = s3_endpoint.client().list_objects_v2(Bucket=s3_endpoint.bucket, Prefix=prefix + "/")
        in_bucket = {o["Key"].rsplit("/", 1)[-1] for o in listed.get("Contents", [])}
        uploaded = {hashlib.sha256(d).hexdigest() for group in images.values() for d in group}
        assert uploaded | {hashlib.sha256(probe).hexdigest()} <= in_bucket  # images and the stored prediction
        assert len(in_bucket) >= len(uploaded) + 3  # and the iteration's probe and evaluation files
        assert not (tmp_path / "data" / "blobs").exists()

        image = trainer.get_tagged_images(project.id, take=1)[0]
        with urllib.request.urlopen(image.original_image_uri, timeout=30) as r:
            assert hashlib.sha256(r.read()).hexdigest() in uploaded
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert " ERROR " not in text, text[-3000:]
    assert s3_endpoint.secret_key not in text and "blobs in S3BlobStore(s3://" in text


def test_serve_stops_at_start_up_when_the_bucket_cannot_be_used(tmp_path, model_dir, s3_endpoint):
    env = s3_endpoint.env() | {"AWS_SECRET_ACCESS_KEY": "not-the-key"}
    proc, _url, log = _serve(tmp_path, model_dir, env)
    assert proc.wait(timeout=120) == 2
    text = log.read_text()
    assert "refused the credentials" in text and "AWS_SECRET_ACCESS_KEY" in text and "not-the-key" not in text
