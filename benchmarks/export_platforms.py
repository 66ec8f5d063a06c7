"""Benchmark 12: exported models (OpenVINO, DockerFile) — file size and single-image latency on this CPU, next to
the server's in-process prediction latency and ONNX Runtime on the same classifier graph, measured in this run.

- OpenVINO: the IR's size; one preprocessed image through the compiled model, at float32
  (INFERENCE_PRECISION_HINT=f32, cvbot's numbers) and at the CPU plugin's default precision (bfloat16 on CPUs that
  have it).
- DockerFile: the export's size; `python app.py` from the unpacked export (a real process on a loopback port), one
  1-megapixel JPEG per POST /image over a kept-alive connection: decode, preprocessing, model and JSON, as a client
  sees it.
- References: `predictions.predict` in process (decode, preprocessing, model, probe: what cvbot's server does for
  one image) and ONNX Runtime on the same graph and pixels as OpenVINO.
"""
from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from .common import Config, load_average, megapixel_jpeg, percentile
from .serve import free_port, prepare_project, server_env


def _latency(fn, requests: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(requests):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1000)
    return {"requests": requests, "p50_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2)}


def _type_name(t) -> str:
    return str(t.to_string()) if hasattr(t, "to_string") else str(t)


def _files(exporter, backbone, probe, it, meta) -> dict[str, bytes]:
    from core.export import ExportRequest, build_model

    onnx = build_model(backbone, probe, it.tag_names, it.tag_ids, meta, exporter.convention)
    with tempfile.TemporaryDirectory() as work:
        return exporter.files(ExportRequest(onnx, it.tag_names, {}, None, Path(work), meta))


def _zip_bytes(files: dict[str, bytes]) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return len(buf.getvalue())


def run(cfg: Config, tmp: Path) -> dict:
    import onnxruntime as ort

    from core.backbones.base import Preprocessing
    from core.export import build_model
    from core.export.dockerfile import DockerFileExporter
    from core.export.openvino import OpenVinoExporter
    from core.images import decode_rgb
    from core.usecases import Scope
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings

    env = server_env(tmp / "data")
    project_id = prepare_project(env, "Compact", per_tag=cfg.pick(20, 8), name="exports")
    jpeg = megapixel_jpeg()
    requests = cfg.pick(200, 20)
    result: dict = {"image_bytes": len(jpeg), "load_average": load_average()}
    container = bootstrap(Settings.from_env(env), recover=False)
    try:
        cv = container.usecases(Scope.of("default"))
        (it,) = [i for i in cv.iterations.list(project_id) if i.status.value == "Completed"][:1]
        backbone = container.deps.backbones.for_domain(it.domain)
        probe = container.deps.artifacts.probe(it.probe_key or "")
        meta = {"projectId": project_id, "iterationId": it.id}
        result["server_in_process"] = _latency(lambda: cv.predictions.predict(project_id, jpeg, store=False),
                                               requests)
        pre: Preprocessing = backbone.preprocessing
        rgb = pre.crop(decode_rgb(jpeg, min_side=pre.size)).astype(np.float32)
        pixels_01 = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None] / 255.0, dtype=np.float32)

        # reference: ONNX Runtime on the same graph and pixels (RGB 0..1), default session options
        graph = build_model(backbone, probe, it.tag_names, it.tag_ids, meta, OpenVinoExporter.convention)
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        result["onnxruntime_model"] = _latency(lambda: session.run(None, {"data": pixels_01}), requests)

        ov_exporter = OpenVinoExporter()
        if ov_exporter.unavailable() is None:
            import openvino as ov

            files = _files(ov_exporter, backbone, probe, it, meta)
            folder = tmp / "openvino"
            folder.mkdir()
            for name, data in files.items():
                (folder / name).write_bytes(data)
            core = ov.Core()
            model = core.read_model(str(folder / "model.xml"))
            f32 = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            default = core.compile_model(model, "CPU")
            result["openvino"] = {
                "ir_bytes": sum(len(d) for d in files.values()), "zip_bytes": _zip_bytes(files),
                "f32": _latency(lambda: f32(pixels_01), requests),
                "default": {**_latency(lambda: default(pixels_01), requests),
                            "precision": _type_name(default.get_property("INFERENCE_PRECISION_HINT"))},
                "max_abs_diff_default_vs_f32": float(np.abs(default(pixels_01)[0] - f32(pixels_01)[0]).max()),
            }
        else:
            result["openvino"] = {"skipped": ov_exporter.unavailable()}

        files = _files(DockerFileExporter(), backbone, probe, it, meta)
    finally:
        container.close()

    folder = tmp / "docker"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=folder / "app", stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "QUIET": "1"})
    try:
        started = time.perf_counter()
        conn = None
        while conn is None:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                c.request("GET", "/")
                c.getresponse().read()
                conn = c
            except OSError:
                if proc.poll() is not None or time.perf_counter() - started > 60:
                    raise RuntimeError("app.py did not start") from None
                time.sleep(0.1)
        ready_s = time.perf_counter() - started

        def post() -> None:
            conn.request("POST", "/image", jpeg, {"Content-Type": "application/octet-stream"})
            answer = json.loads(conn.getresponse().read())
            assert answer["predictions"], answer

        result["dockerfile"] = {"zip_bytes": _zip_bytes(files), "model_bytes": len(files["app/model.onnx"]),
                                "ready_s": round(ready_s, 2), "http_image": _latency(post, requests)}
    finally:
        proc.terminate()
        proc.wait(10)
    ref = result["server_in_process"]["p50_ms"]
    result["ratio_to_server_in_process"] = {
        "openvino_f32": round(result["openvino"]["f32"]["p50_ms"] / ref, 2) if "f32" in result["openvino"] else None,
        "dockerfile_http": round(result["dockerfile"]["http_image"]["p50_ms"] / ref, 2)}
    return result
