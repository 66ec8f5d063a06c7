"""Benchmark 4: prediction latency of one 1-megapixel JPEG, in-process and over `cvbot serve`'s HTTP API."""
from __future__ import annotations

import http.client
import os
import threading
import time
from pathlib import Path

import numpy as np

from .common import Config, load_average, megapixel_jpeg, percentile
from .serve import classify, classify_path, prepare_project, server_env, start_server


def _stats(latencies_s: list[float]) -> dict:
    ms = [x * 1000 for x in latencies_s]
    return {"requests": len(ms), "p50_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2),
            "mean_ms": round(float(np.mean(ms)), 2)}


def _raw_forward_bs1(backbone, seconds: float) -> float:
    from core.images import decode_rgb

    x = backbone.preprocess(decode_rgb(megapixel_jpeg(), min_side=backbone.preprocessing.size))[None]
    backbone.forward(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        backbone.forward(x)
        n += 1
    return n / (time.perf_counter() - t0)


def run(cfg: Config, tmp: Path) -> dict:
    from core.usecases import Scope
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings

    data_dir = tmp / "serve-data"
    env = server_env(data_dir)
    project_id = prepare_project(env, "Compact", per_tag=cfg.pick(20, 8), name="latency")
    jpeg = megapixel_jpeg()
    requests = cfg.pick(300, 40)
    result: dict = {"image_bytes": len(jpeg), "load_average": load_average()}

    # in-process: the service call the HTTP handler makes, without storing the prediction
    container = bootstrap(Settings.from_env(env), recover=False)
    try:
        predictions = container.usecases(Scope.of("default")).predictions
        for _ in range(5):
            predictions.predict(project_id, jpeg, store=False)
        lat = []
        for _ in range(requests):
            t = time.perf_counter()
            predictions.predict(project_id, jpeg, store=False)
            lat.append(time.perf_counter() - t)
        result["in_process"] = _stats(lat)
        progressive = megapixel_jpeg(progressive=True)
        lat = []
        for _ in range(max(20, requests // 4)):
            t = time.perf_counter()
            predictions.predict(project_id, progressive, store=False)
            lat.append(time.perf_counter() - t)
        result["in_process_progressive"] = {**_stats(lat), "image_bytes": len(progressive)}
        backbone = container.deps.backbones.for_domain("Compact")
        result["raw_forward_bs1_images_per_s"] = round(_raw_forward_bs1(backbone, cfg.pick(3.0, 1.0)), 1)
    finally:
        container.close()

    server = start_server(env)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        for store in (True, False):
            path = classify_path(project_id, store)
            for _ in range(5):
                classify(conn, path, jpeg)
            lat = []
            for _ in range(requests):
                t = time.perf_counter()
                out = classify(conn, path, jpeg)
                lat.append(time.perf_counter() - t)
            assert out["predictions"], out
            result["http_store" if store else "http_nostore"] = _stats(lat)
        conn.close()
        # throughput with 8 concurrent clients, each on its own keep-alive connection
        clients, per_client = 8, cfg.pick(40, 8)
        path = classify_path(project_id, True)
        errors: list[str] = []
        lat = []
        lock = threading.Lock()

        def client():
            c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
            try:
                for _ in range(per_client):
                    t = time.perf_counter()
                    classify(c, path, jpeg)
                    with lock:
                        lat.append(time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
            finally:
                c.close()

        threads = [threading.Thread(target=client) for _ in range(clients)]
        cpu0 = server.cpu_seconds()
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        cpu = server.cpu_seconds() - cpu0
        if errors:
            raise RuntimeError(f"concurrent clients failed: {errors[:3]}")
        total = clients * per_client
        cores = os.cpu_count() or 1
        result["http_concurrent"] = {"clients": clients, "requests": total,
                                     "requests_per_s": round(total / wall, 1), **_stats(lat),
                                     "server_cpu_ms_per_request": round(cpu / total * 1000, 2),
                                     "cpu_bound_ceiling_requests_per_s": round(cores / (cpu / total), 1)}
    finally:
        server.stop()
    return result
