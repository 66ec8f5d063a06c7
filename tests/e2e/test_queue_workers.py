"""Past one machine, end to end: one PostgreSQL, two `cvbot serve --no-jobs` web processes and two `cvbot worker`
processes, all real processes on loopback. Images go in through one web process, training is asked of the other;
the worker holding the training (named by its lease) is killed with SIGKILL mid-job, and the other worker must
complete it within 60 s, exactly once; both web processes then answer predictions identically. SIGTERM to the last
worker while it trains lets it finish the training before it exits. Blobs live in one SeaweedFS bucket (BLOBS) and
each process has a data directory of its own, as on separate machines."""
from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, text

from tests.helpers import env_with, free_port

CVBOT = str(Path(sys.executable).parent / "cvbot")
TRAINING_KEY = "queue-training-" + uuid.uuid4().hex
PREDICTION_KEY = "queue-prediction-" + uuid.uuid4().hex

# Where the processes keep blobs: "s3" (one SeaweedFS bucket, tests/s3_server.py; each process then has a data
# directory of its own, as on separate machines) or "local" (one data directory shared by every process).
BLOBS = "s3"


@pytest.fixture
def blob_env(request, tmp_path):
    """`blob_env(name)`: the variables that put process `name`'s blobs where BLOBS says."""
    if BLOBS == "local":
        return lambda name: {"CVBOT_DATA_DIR": str(tmp_path / "data")}
    endpoint = request.getfixturevalue("s3_endpoint")
    prefix = f"queue-{uuid.uuid4().hex[:10]}"
    return lambda name: {"CVBOT_DATA_DIR": str(tmp_path / name / "data"), **endpoint.env(prefix)}


def photo_like(rgb, seed: int, size: int = 384) -> bytes:
    """A noisy JPEG of one colour: real decoding work for the backbone, so a training lasts long enough to kill."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb, np.float32) + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=2).close()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} not healthy in {timeout} s:\n{log.read_text()[-3000:]}")


def _wait_training(engine, iteration_id: str, log_tail, timeout: float = 120):
    """(status, lease) as soon as the iteration leaves Queued: its status and the lease of its training job."""
    deadline = time.monotonic() + timeout
    with engine.connect() as c:
        while True:
            status = c.execute(text("SELECT status FROM iterations WHERE id = :id"), {"id": iteration_id}).scalar()
            c.rollback()
            if status != "Queued":
                break
            assert time.monotonic() < deadline, "no worker started the training\n" + log_tail()
            time.sleep(0.02)
        lease = c.execute(text(
            "SELECT l.pid, l.worker FROM cvbot_job_leases l JOIN procrastinate_jobs j ON j.id = l.job_id "
            "WHERE j.status = 'doing' AND l.kind = 'train' AND l.args->>'iteration_id' = :id"),
            {"id": iteration_id}).first()
    return status, lease


def test_worker_and_no_jobs_refuse_on_sqlite(tmp_path):
    env = env_with(tmp_path)
    out = subprocess.run([CVBOT, "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "cvbot worker needs PostgreSQL" in out.stderr, out.stderr
    assert "cvbot serve runs every job itself" in out.stderr
    out = subprocess.run([CVBOT, "serve", "--no-jobs", "--port", str(free_port())], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "needs PostgreSQL" in out.stderr, out.stderr


@pytest.mark.slow
def test_a_killed_worker_s_training_is_completed_once_by_the_other(tmp_path, postgres_url, model_dir, blob_env):
    from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
    from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
    from azure.cognitiveservices.vision.customvision.training.models import (
        ImageFileCreateBatch,
        ImageFileCreateEntry,
    )
    from msrest.authentication import ApiKeyCredentials

    env = env_with(tmp_path, DATABASE_URL=postgres_url, CVBOT_MODEL_DIR=model_dir, CVBOT_TRAINING_KEY=TRAINING_KEY,
                   CVBOT_PREDICTION_KEY=PREDICTION_KEY, CVBOT_LOG_LEVEL="INFO", CVBOT_THREADS=1,
                   CVBOT_EMBED_CHUNK=0,  # the training embeds every image itself: a window wide enough to kill in
                   **blob_env("cli"))
    subprocess.run([CVBOT, "project", "list"], env=env, check=True, capture_output=True, timeout=120)  # migrate once
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}

    def start(name: str, *args: str) -> subprocess.Popen:
        logs[name] = tmp_path / f"{name}.log"
        procs[name] = subprocess.Popen([CVBOT, *args], env={**env, **blob_env(name)}, stdout=logs[name].open("wb"),
                                       stderr=subprocess.STDOUT)
        return procs[name]

    def log_tail() -> str:
        return "\n".join(f"--- {n}\n{p.read_text()[-2500:]}" for n, p in logs.items())

    engine = create_engine(postgres_url)
    try:
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for i, port in enumerate(ports):
            start(f"web{i + 1}", "serve", "--no-jobs", "--port", str(port))
        workers = [start("worker1", "worker"), start("worker2", "worker")]
        for i, url in enumerate(urls):
            _wait_healthy(url, procs[f"web{i + 1}"], logs[f"web{i + 1}"])
        trainers = [CustomVisionTrainingClient(u, ApiKeyCredentials(in_headers={"Training-key": TRAINING_KEY}))
                    for u in urls]
        predictors = [CustomVisionPredictionClient(u, ApiKeyCredentials(in_headers={"Prediction-key": PREDICTION_KEY}))
                      for u in urls]

        project = trainers[0].create_project("queue e2e")
        colours = {"red": (200, 40, 40), "blue": (40, 60, 200)}
        for n, (name, rgb) in enumerate(colours.items()):
            tag = trainers[0].create_tag(project.id, name)
            images = [photo_like(rgb, seed=100 * n + i) for i in range(60)]
            for start_at in range(0, len(images), 30):
                batch = ImageFileCreateBatch(images=[ImageFileCreateEntry(name=f"{name}{start_at + j}.jpg", contents=d,
                                                                          tag_ids=[tag.id])
                                                     for j, d in enumerate(images[start_at:start_at + 30])])
                assert trainers[0].create_images_from_files(project.id, batch).is_batch_successful
        assert trainers[1].get_tagged_image_count(project.id) == 120  # the other web process sees them

        iteration = trainers[1].train_project(project.id)
        # watched in the database, not through the API, so that the kill follows the start within milliseconds
        status, lease = _wait_training(engine, iteration.id, log_tail)
        assert status == "Training", f"{status}: the training ended before it could be interrupted\n" + log_tail()
        holder = next(w for w in workers if w.pid == lease.pid)  # the job's lease names the worker holding it
        survivor = next(w for w in workers if w is not holder)
        assert lease.worker.endswith(f":{holder.pid}")
        holder.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        holder.wait(timeout=30)
        assert trainers[1].get_iteration(project.id, iteration.id).status == "Training"  # cut off mid-job

        while (status := trainers[0].get_iteration(project.id, iteration.id).status) in ("Queued", "Training"):
            assert time.monotonic() - killed_at < 60, "not completed within 60 s of the kill\n" + log_tail()
            time.sleep(0.5)
        took = time.monotonic() - killed_at
        assert status == "Completed", log_tail()
        assert took < 60
        print(f"training completed by the other worker {took:.1f} s after the kill")
        survivor_log = logs["worker1" if survivor is workers[0] else "worker2"].read_text()
        assert "was interrupted; training it again" in survivor_log

        listed = trainers[0].get_iterations(project.id)
        assert [(i.id, i.status) for i in listed] == [(iteration.id, "Completed")]  # exactly one, completed once
        with engine.connect() as c:
            left = c.execute(text("SELECT status, count(*) FROM procrastinate_jobs GROUP BY status")).all()
        assert {s for s, _ in left} <= {"succeeded"}, left  # nothing waiting, running or failed

        assert trainers[1].publish_iteration(project.id, iteration.id, "prod", "resource")
        for rgb in colours.values():
            probe_image = photo_like(rgb, seed=999)
            answers = [sorted((p.tag_name, p.probability) for p in
                              pr.classify_image_with_no_store(project.id, "prod", probe_image).predictions)
                       for pr in predictors]
            assert answers[0] == answers[1]
        assert max(answers[0], key=lambda tp: tp[1])[0] == "blue"

        # SIGTERM mid-job: the worker finishes the training it holds (no other worker is left to), then exits 0
        tag = trainers[0].get_tags(project.id)[0]
        more = [photo_like(colours[tag.name], seed=5000 + i) for i in range(60)]
        for start_at in range(0, len(more), 30):
            batch = ImageFileCreateBatch(images=[ImageFileCreateEntry(name=f"more{start_at + j}.jpg", contents=d,
                                                                      tag_ids=[tag.id])
                                                 for j, d in enumerate(more[start_at:start_at + 30])])
            assert trainers[0].create_images_from_files(project.id, batch).is_batch_successful
        second = trainers[0].train_project(project.id)
        status, _ = _wait_training(engine, second.id, log_tail)
        assert status == "Training", log_tail()
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=180) == 0, log_tail()
        assert trainers[1].get_iteration(project.id, second.id).status == "Completed", log_tail()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        engine.dispose()


@pytest.mark.slow
def test_one_serve_on_postgresql_queues_and_runs_every_kind_of_job(tmp_path, postgres_url, model_dir, blob_env):
    """Without --no-jobs, `cvbot serve` on PostgreSQL still does everything alone: embedding of uploads, training,
    ONNX export and import_project's copy go through the queue to the worker inside the same process."""
    from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
    from azure.cognitiveservices.vision.customvision.training.models import (
        ImageFileCreateBatch,
        ImageFileCreateEntry,
    )
    from msrest.authentication import ApiKeyCredentials

    env = env_with(tmp_path, DATABASE_URL=postgres_url, CVBOT_MODEL_DIR=model_dir, CVBOT_TRAINING_KEY=TRAINING_KEY,
                   CVBOT_PREDICTION_KEY=PREDICTION_KEY, CVBOT_LOG_LEVEL="INFO", CVBOT_EMBED_CHUNK=8,
                   **blob_env("serve"))
    port = free_port()
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([CVBOT, "serve", "--port", str(port)], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    engine = create_engine(postgres_url)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc, log)
        trainer = CustomVisionTrainingClient(url, ApiKeyCredentials(in_headers={"Training-key": TRAINING_KEY}))
        project = trainer.create_project("one process", domain_id="0732100f-1a38-4e49-a514-c9b44c697ab5")
        for n, (name, rgb) in enumerate({"red": (200, 40, 40), "blue": (40, 60, 200)}.items()):
            tag = trainer.create_tag(project.id, name)
            batch = ImageFileCreateBatch(images=[ImageFileCreateEntry(name=f"{name}{i}.jpg", tag_ids=[tag.id],
                                                                      contents=photo_like(rgb, 10 * n + i, 64))
                                                 for i in range(12)])
            assert trainer.create_images_from_files(project.id, batch).is_batch_successful
        iteration = trainer.train_project(project.id)
        deadline = time.monotonic() + 120
        while (it := trainer.get_iteration(project.id, iteration.id)).status in ("Queued", "Training"):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        assert it.status == "Completed", log.read_text()[-3000:]

        export = trainer.export_iteration(project.id, iteration.id, "ONNX")
        while (export := trainer.get_exports(project.id, iteration.id)[0]).status == "Exporting":
            assert time.monotonic() < deadline + 120, log.read_text()[-3000:]
            time.sleep(0.3)
        assert export.status == "Done" and export.download_uri

        copy = trainer.import_project(trainer.export_project(project.id).token, name="the copy")
        while trainer.get_tagged_image_count(copy.id) < 24:
            assert time.monotonic() < deadline + 180, log.read_text()[-3000:]
            time.sleep(0.3)
        assert sorted(t.name for t in trainer.get_tags(copy.id)) == ["blue", "red"]

        with engine.connect() as c:
            kinds = c.execute(text("SELECT count(*) FROM procrastinate_jobs")).scalar()
        assert kinds == 0  # every job succeeded and was cleared: 3 embedding chunks, train, export, copy
        assert "embed" in log.read_text() and "jobs queued in PostgreSQL and run here too" in log.read_text()
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
        engine.dispose()
