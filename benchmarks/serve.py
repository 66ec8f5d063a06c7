"""A real `cvbot serve` process on loopback, with trained, published projects in its data directory."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .common import model_dir, tuxpaint_dataset

PREDICTION_KEY = "bench-prediction-key"
TRAINING_KEY = "bench-training-key"
PUBLISH_NAME = "bench"
CVBOT = str(Path(sys.executable).parent / "cvbot")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data_dir: Path, **extra) -> dict:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("CVBOT_") or k in ("DATABASE_URL", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN",
                                           "SLACK_SIGNING_SECRET"):
            env.pop(k)
    env.update({"CVBOT_DATA_DIR": str(data_dir), "CVBOT_MODEL_DIR": str(model_dir()), "CVBOT_LOG_LEVEL": "WARNING",
                "CVBOT_PREDICTION_KEY": PREDICTION_KEY, "CVBOT_TRAINING_KEY": TRAINING_KEY})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def prepare_project(env: dict, domain: str, per_tag: int, name: str) -> str:
    """Create, train and publish a project on real stamps (per_tag images of each category) in the data
    directory the server will use; returns its id."""
    from core.usecases import ImageUpload, Scope
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings

    container = bootstrap(Settings.from_env(env), recover=False)
    try:
        cv = container.usecases(Scope.of("default"))
        stamps, labels, names = tuxpaint_dataset()
        project = cv.projects.create(name, domain=domain)
        tags = [cv.tags.create(project.id, n) for n in names]
        uploads = []
        for c in range(len(names)):
            for i in list(filter(lambda j: labels[j] == c, range(len(labels))))[:per_tag]:
                uploads.append(ImageUpload(stamps[i], f"{c}-{i}.png", [tags[c].id]))
        assert all(r.ok for r in cv.images.add(project.id, uploads))
        it = cv.training.wait(project.id, cv.training.train(project.id).id, timeout=900)
        assert it.status.value == "Completed", it.failure_reason
        cv.iterations.publish(project.id, it.id, PUBLISH_NAME)
        return project.id
    finally:
        container.close()


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    started: float
    healthy_s: float

    def rss_mb(self) -> tuple[float, float]:
        from .common import rss_mb

        return rss_mb(self.proc.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_server(env: dict, timeout: float = 180.0) -> Server:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([CVBOT, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cvbot serve exited with {proc.returncode}: {proc.stderr.read()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return Server(proc, port, t0, time.perf_counter() - t0)
            conn.close()
        except OSError:
            pass
        time.sleep(0.01)
    proc.kill()
    raise RuntimeError("cvbot serve did not become healthy")


def classify_path(project_id: str, store: bool = True) -> str:
    suffix = "image" if store else "image/nostore"
    return f"/customvision/v3.1/prediction/{project_id}/classify/iterations/{PUBLISH_NAME}/{suffix}"


def classify(conn: http.client.HTTPConnection, path: str, data: bytes) -> dict:
    conn.request("POST", path, body=data, headers={"Prediction-Key": PREDICTION_KEY,
                                                     "Content-Type": "application/octet-stream"})
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {body[:500]!r}")
    return json.loads(body)
