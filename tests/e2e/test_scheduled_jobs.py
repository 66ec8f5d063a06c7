"""Scheduled jobs with three real `cvbot serve` processes on one PostgreSQL database (and one data directory): every
process runs APScheduler and fires every job on a short test interval (CVBOT_SCHEDULE_INTERVAL), and each slot of
each job runs in exactly one of them; the effects (one retraining, expired predictions and an orphan blob deleted)
happen once."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest

from core.model import IterationStatus, Prediction, TagPrediction, utcnow
from core.usecases import ImageUpload, Scope, UseCases
from tests.conftest import make_deps
from tests.helpers import colour_images, env_with, free_port

CVBOT = str(Path(sys.executable).parent / "cvbot")
RAN = re.compile(r"scheduled job (\S+) \((\S+)\) ran in (\S+): (\w+) (.*)")
JOB_NAMES = ("retrain", "prediction-retention", "store-cleanup")


def _start(tmp: Path, database_url: str, model_dir: Path, name: str) -> tuple[subprocess.Popen, Path, str]:
    port = free_port()
    env = env_with(tmp, CVBOT_MODEL_DIR=model_dir, DATABASE_URL=database_url, CVBOT_LOG_LEVEL="INFO",
                   CVBOT_SCHEDULE_INTERVAL="2", CVBOT_ORPHAN_GRACE_SECONDS="1", CVBOT_THREADS="1")
    env["CVBOT_DATA_DIR"] = str(tmp / "data")
    log = tmp / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([CVBOT, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, log, f"http://127.0.0.1:{port}"


def _healthy(proc: subprocess.Popen, log: Path, url: str) -> None:
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


def _prediction(deps, project_id: str, data: bytes, age_days: float) -> Prediction:
    pred = Prediction(project_id=project_id, iteration_id="made-elsewhere", threshold=0.5, sha256=deps.blobs.put(data),
                      stored=True, predictions=[TagPrediction("t", "t", 0.9)],
                      created_at=utcnow() - timedelta(days=age_days))
    with deps.uow() as uow:
        uow.predictions.add(pred)
        uow.commit()
    return pred


@pytest.mark.slow
def test_three_processes_run_each_scheduled_slot_once(tmp_path, postgres_url, model_dir, provider):
    deps = make_deps(tmp_path / "data", provider, database_url=postgres_url)
    cv = UseCases(deps, Scope.of("default"))
    nightly = cv.projects.create("nightly")
    tags = [cv.tags.create(nightly.id, n) for n in ("red", "green")]
    for tag, colour, seed in zip(tags, ((220, 30, 30), (30, 200, 40)), (1, 2), strict=True):
        cv.images.add(nightly.id, [ImageUpload(d, f"{tag.name}{i}.png", [tag.id])
                                   for i, d in enumerate(colour_images(6, colour, seed))])
    kept = cv.projects.create("predictions")
    cv.projects.update(kept.id, prediction_retention="30")
    old = _prediction(deps, kept.id, b"an old prediction's image", 40)
    young = _prediction(deps, kept.id, b"a young prediction's image", 1)

    servers = [_start(tmp_path, postgres_url, model_dir, f"web{i}") for i in range(3)]
    try:
        for proc, log, url in servers:
            _healthy(proc, log, url)
        # only now that all three run: a process starting up fails trainings it finds running, and one starting
        # alone deletes orphan blobs itself
        cv.projects.update(nightly.id, retrain="nightly")
        orphan = deps.blobs.put(b"nobody refers to me")
        deadline = time.monotonic() + 120
        while True:
            with deps.uow() as uow:
                runs = uow.job_runs.list(limit=1000)
            done = {j: sum(r.job == j and r.finished_at is not None for r in runs) for j in JOB_NAMES}
            its = cv.iterations.list(nightly.id)
            if min(done.values()) >= 4 and its and its[-1].status == IterationStatus.Completed:
                break
            assert time.monotonic() < deadline, (done, its)
            time.sleep(0.5)
    finally:
        for proc, _, _ in servers:
            proc.terminate()
        for proc, _, _ in servers:
            proc.wait(timeout=30)

    logged: list[tuple[str, str, str]] = []
    for _, log, _ in servers:
        text = log.read_text()
        assert " ERROR " not in text, text[-4000:]
        logged += [(m.group(1), m.group(2), m.group(3), m.group(5)) for m in RAN.finditer(text)]
    slots = [(job, slot) for job, slot, _, _ in logged]
    assert len(slots) == len(set(slots)), "a slot ran in two processes"
    with deps.uow() as uow:
        runs = uow.job_runs.list(limit=1000)
    finished = {(r.job, r.slot): r for r in runs if r.finished_at is not None}
    assert set(finished) <= set(slots) and all(r.status.value == "Done" for r in finished.values())
    assert {owner for _, _, owner, _ in logged} == {r.owner for r in runs}  # the log names the processes that ran
    assert len({r.owner for r in runs}) >= 2, "all slots ran in one process: the test shows nothing"

    # the effects happened once: one retraining although three processes fired it in every slot
    [it] = cv.iterations.list(nightly.id)
    assert it.status == IterationStatus.Completed
    assert [p.id for p in cv.predictions.list(kept.id)] == [young.id]
    assert not deps.blobs.exists(old.sha256) and deps.blobs.exists(young.sha256)
    assert not deps.blobs.exists(orphan)
    results = [ast.literal_eval(result) for _, _, _, result in logged]
    assert sum(r.get("predictions_deleted", 0) for r in results) == 1
    assert sum(r.get("orphan_blobs_deleted", 0) for r in results) == 1
    assert sum(len(r.get("started", [])) for r in results) == 1
