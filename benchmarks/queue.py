"""Benchmark 13: the job queue on PostgreSQL (issue #12). Needs a PostgreSQL server: CVBOT_BENCH_POSTGRES_URL or
CVBOT_TEST_POSTGRES_URL (a role that may create databases); each run uses a database of its own, dropped after.

- Queue overhead: one job at a time is queued while a worker waits idle; the time from enqueue to start is read
  from procrastinate's own event rows (`deferred` -> `started`, both stamped by PostgreSQL's clock), next to a
  reference measured in the same run: one `SELECT 1` round trip to the same server.
- Embedding an import with 1 and 2 `cvbot worker` processes (each with CVBOT_THREADS=1): the import's images are
  stored first, then queued as embedding jobs of CVBOT_EMBED_CHUNK images while the workers wait (model loaded);
  wall time until the last job is done, and each worker's CPU seconds over that time (from /proc), so CPU
  efficiency = CPU seconds / (wall seconds x threads). Images per CPU-second is the machine-independent figure:
  M workers on M free cores embed about M x that per second, as long as PostgreSQL and the blob store keep up."""
from __future__ import annotations

import io
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np

from .common import Config, MissingData, load_average
from .serve import CVBOT, server_env

CHUNK = 32


def _postgres_base() -> str:
    url = os.environ.get("CVBOT_BENCH_POSTGRES_URL") or os.environ.get("CVBOT_TEST_POSTGRES_URL")
    if not url:
        raise MissingData("set CVBOT_TEST_POSTGRES_URL (or CVBOT_BENCH_POSTGRES_URL) to a PostgreSQL server; "
                          ".ci/run starts one")
    return url


def _images(n: int, size: int = 256) -> list[bytes]:
    """Photo-like JPEGs (a colour per class plus noise), each distinct."""
    from PIL import Image

    rng = np.random.default_rng(12)
    out = []
    for i in range(n):
        base = np.array([(40 + 97 * i) % 256, (90 + 53 * i) % 256, (160 + 31 * i) % 256], np.float32)
        pixels = np.clip(base + rng.normal(0, 35, (size, size, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pending(engine) -> int:
    from sqlalchemy import text

    with engine.connect() as c:
        return c.execute(text("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")).scalar()


def _wait_workers(engine, n: int, timeout: float = 120) -> None:
    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as c:
            if c.execute(text("SELECT count(*) FROM procrastinate_workers")).scalar() >= n:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{n} workers did not register in {timeout} s")


def _wait_done(engine, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while _pending(engine):
        if time.monotonic() > deadline:
            raise RuntimeError("the queue did not drain")
        time.sleep(0.05)


def run(cfg: Config, tmp: Path) -> dict:
    from sqlalchemy import create_engine, text

    base = _postgres_base()
    name = f"cvbot_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        return _run(cfg, tmp, url)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _run(cfg: Config, tmp: Path, url: str) -> dict:
    from sqlalchemy import create_engine

    from core.usecases import ImageUpload, Scope, UseCases
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings

    env = server_env(tmp / "data", DATABASE_URL=url, CVBOT_THREADS=1, CVBOT_EMBED_CHUNK=CHUNK,
                     CVBOT_LOG_LEVEL="WARNING")
    settings = Settings.from_env(env)
    container = bootstrap(settings, recover=False, jobs="queue")  # migrates; jobs go to the queue
    engine = create_engine(url)
    try:
        deps = container.deps
        cv = UseCases(deps, Scope.of("default"))
        n_images = cfg.pick(2000, 96)
        images = _images(n_images)
        project = cv.projects.create("queue bench")
        deps.embed_chunk = 0  # stored now, queued later (while the workers wait)
        for start in range(0, n_images, 64):
            batch = images[start:start + 64]
            cv.images.add(project.id, [ImageUpload(d, f"{start + i}.jpg") for i, d in enumerate(batch)])
        shas = [i.sha256 for i in cv.images.list(project.id, order="Oldest")]

        overhead = _overhead(cfg, container, engine)
        workers = {}
        for k in (1, 2):
            workers[f"{k} worker{'s' if k > 1 else ''}"] = _embed_with(k, container, engine, env, tmp, shas)
        one, two = workers["1 worker"], workers["2 workers"]
        return {
            "load_average": load_average(), "cores": os.cpu_count(), "threads_per_worker": 1, "chunk": CHUNK,
            "images": n_images, "image_px": 256, "overhead": overhead, "workers": workers,
            "speedup_2_over_1": round(two["images_per_s"] / one["images_per_s"], 2),
            "images_per_cpu_second": one["images_per_cpu_s"],
        }
    finally:
        engine.dispose()
        container.close()


def _start_workers(k: int, env: dict, tmp: Path, engine) -> list[subprocess.Popen]:
    from sqlalchemy import text

    with engine.begin() as c:  # workers of an earlier round, stopped: forget them
        c.execute(text("DELETE FROM procrastinate_workers"))
    procs = [subprocess.Popen([CVBOT, "worker"], env=env, stdout=(tmp / f"worker{i}.log").open("ab"),
                              stderr=subprocess.STDOUT) for i in range(k)]
    _wait_workers(engine, k)
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _overhead(cfg: Config, container, engine) -> dict:
    """Enqueue -> start of trivial jobs (an embedding job of a hash that is not stored: nothing to do), one at a
    time, with an idle worker (in this process, keeping finished jobs so that their events can be read)."""
    from sqlalchemy import text

    from cvbot.worker import WorkerThread

    with engine.begin() as c:
        c.execute(text("DELETE FROM procrastinate_workers"))
    worker = WorkerThread(container, delete_jobs="never").start()
    try:
        _wait_workers(engine, 1)
        container.deps.submit("embed", domain="Compact", sha256s=[])  # loads the model: untimed
        _wait_done(engine)
        with engine.connect() as c:
            first = c.execute(text("SELECT max(id) FROM procrastinate_jobs")).scalar() + 1
        n = cfg.pick(60, 8)
        for i in range(n):
            container.deps.submit("embed", domain="Compact", sha256s=[f"{i:064x}"])
            _wait_done(engine)
            time.sleep(0.05)
        with engine.connect() as c:
            rows = c.execute(text(
                "SELECT extract(epoch FROM s.at - d.at) * 1000 FROM procrastinate_events d "
                "JOIN procrastinate_events s ON s.job_id = d.job_id AND s.type = 'started' "
                "WHERE d.type = 'deferred' AND d.job_id >= :first"), {"first": first}).all()
            ms = sorted(float(r[0]) for r in rows)
            t = time.perf_counter()
            for _ in range(200):
                c.execute(text("SELECT 1"))
            round_trip_ms = (time.perf_counter() - t) / 200 * 1000
    finally:
        worker.stop(timeout=30)
    p50 = statistics.median(ms)
    return {"jobs": len(ms), "p50_ms": round(p50, 1), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
            "max_ms": round(ms[-1], 1), "select_1_round_trip_ms": round(round_trip_ms, 2),
            "ratio_to_round_trip": round(p50 / round_trip_ms, 1)}


def _embed_with(k: int, container, engine, env: dict, tmp: Path, shas: list[str]) -> dict:
    from sqlalchemy import text

    procs = _start_workers(k, env, tmp, engine)
    try:
        for i in range(2 * k):  # warm-up: single images, so that each worker loads the model before the clock
            container.deps.submit("embed", domain="Compact", sha256s=[shas[i]])
        _wait_done(engine)
        with engine.begin() as c:
            c.execute(text("DELETE FROM embeddings"))
        cpu0 = [_cpu_seconds(p.pid) for p in procs]
        t0 = time.perf_counter()
        for start in range(0, len(shas), CHUNK):
            container.deps.submit("embed", domain="Compact", sha256s=shas[start:start + CHUNK])
        _wait_done(engine)
        wall = time.perf_counter() - t0
        cpu = [_cpu_seconds(p.pid) - c0 for p, c0 in zip(procs, cpu0, strict=True)]
    finally:
        _stop(procs)
    with engine.connect() as c:
        embedded = c.execute(text("SELECT count(*) FROM embeddings")).scalar()
    if embedded < len(shas):
        raise RuntimeError(f"only {embedded} of {len(shas)} images were embedded")
    return {"wall_s": round(wall, 2), "images_per_s": round(len(shas) / wall, 1),
            "per_worker_images_per_s": round(len(shas) / wall / k, 1),
            "cpu_s": [round(c, 2) for c in cpu],
            "cpu_efficiency": [round(c / wall, 2) for c in cpu],
            "images_per_cpu_s": round(len(shas) / sum(cpu), 1)}
