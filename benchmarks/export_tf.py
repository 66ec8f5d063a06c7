"""TensorFlow export: file size, conversion time and single-image latency per flavor on this CPU, next to the
server's in-process prediction latency and ONNX Runtime on the same classifier graph, measured in the same run.

`run(cfg, tmp)` has the signature of the other benchmarks (register it in `benchmarks/__main__.py`);
`python -m benchmarks.export_tf [--quick]` runs it alone and prints the table. Each flavor is timed in the
converter virtualenv (`make export-env`) by benchmarks/tf_timing.py, on one image fed as Microsoft's samples feed
it (whole image resized to 224 x 224, BGR, 0..255, NHWC); the references get the same image.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .common import ROOT, Config, MissingData, load_average, tuxpaint_dataset
from .serve import prepare_project, server_env

FLAVORS = ("TensorFlowNormal", "TensorFlowSavedModel", "TensorFlowLite", "TensorFlowLiteFloat16")
QUICK_FLAVORS = ("TensorFlowNormal",)   # a Lite conversion alone takes about a minute on two shared cores
TIMING = ROOT / "benchmarks" / "tf_timing.py"


def converter_python() -> Path:
    path = Path(os.environ.get("CVBOT_EXPORT_PYTHON") or ROOT / ".venv-export" / "bin" / "python")
    if not path.exists():
        raise MissingData(f"no converter environment at {path}: run `make export-env`")
    return path


def _ms(times: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times)
    return {"median_ms": round(float(np.median(ms)), 2), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 2),
            "best_ms": round(ms[0], 2), "runs": len(ms)}


def run(cfg: Config, tmp: Path) -> dict:
    from core.export import ExportRequest, ExportSettings, build_model
    from core.export.tensorflow import TensorFlowExporter
    from core.usecases import Scope
    from cvbot.bootstrap import bootstrap
    from cvbot.config import Settings
    from tests.export_support import sample_pixels, square_rgb_png

    python = converter_python()
    runs = cfg.pick(50, 10)
    env = server_env(tmp / "data")
    project_id = prepare_project(env, "Compact", per_tag=cfg.pick(10, 5), name="tf-export")
    stamps, _, _ = tuxpaint_dataset()
    image = square_rgb_png(io.BytesIO(stamps[0]))  # a test image as the export tests use them
    container = bootstrap(Settings.from_env(env), recover=False)
    try:
        cv = container.usecases(Scope.of("default"))
        (it,) = [i for i in cv.iterations.list(project_id) if i.status.value == "Completed"]
        backbone = cv.deps.backbones.for_domain(it.domain)
        exporter = TensorFlowExporter(ExportSettings(converter_python=str(python)))
        onnx = build_model(backbone, cv.deps.artifacts.probe(it.probe_key or ""), it.tag_names, it.tag_ids,
                           convention=exporter.convention)
        pixels = sample_pixels(image, backbone.preprocessing.size, "BGR", 255, "NHWC")
        np.save(tmp / "pixels.npy", pixels)

        # references, in this process: cvbot's prediction (decode, resize, model) and the model alone in ORT
        for _ in range(3):
            cv.predictions.predict(project_id, image, iteration_id=it.id, store=False)
        served = []
        for _ in range(runs):
            t = time.perf_counter()
            result = cv.predictions.predict(project_id, image, iteration_id=it.id, store=False)
            served.append(time.perf_counter() - t)
        server_scores = {p.tag_name: p.probability for p in result.predictions}

        from core.backbones.base import onnx_session

        (tmp / "classifier.onnx").write_bytes(onnx)  # with the session options cvbot's backbones use
        session = onnx_session(tmp / "classifier.onnx", os.cpu_count() or 1)
        nchw = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
        for _ in range(3):
            session.run(None, {"data": nchw})
        onnx_times = []
        for _ in range(runs):
            t = time.perf_counter()
            session.run(None, {"data": nchw})
            onnx_times.append(time.perf_counter() - t)

        flavors: dict[str, dict] = {}
        for flavor in cfg.pick(FLAVORS, QUICK_FLAVORS):
            work = tmp / flavor
            work.mkdir()
            t = time.perf_counter()
            files = exporter.files(ExportRequest(onnx=onnx, tag_names=it.tag_names, manifest={}, flavor=flavor,
                                                 workdir=work))
            convert_s = time.perf_counter() - t
            model_dir = work / "unpacked"
            for name, data in files.items():
                (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
                (model_dir / name).write_bytes(data)
            done = subprocess.run([str(python), "-I", str(TIMING), flavor, str(model_dir), str(tmp / "pixels.npy"),
                                   str(runs)], capture_output=True, text=True, timeout=600, check=True)
            timing = json.loads(done.stdout.strip().splitlines()[-1])
            scores = timing.pop("scores")
            flavors[flavor] = {
                "bytes": sum(len(d) for d in files.values()), "convert_s": round(convert_s, 1), **timing,
                "max_abs_diff_to_server": float(max(abs(s - server_scores[n]) for s, n in zip(scores, it.tag_names,
                                                                                                strict=True))),
            }
    finally:
        container.close()
    reference = _ms(onnx_times)["median_ms"]
    for r in flavors.values():
        r["ratio_to_onnxruntime"] = round(r["median_ms"] / reference, 2)
    return {"load_average": load_average(), "image_side": backbone.preprocessing.size,
            "server_in_process": _ms(served), "onnxruntime_model": _ms(onnx_times),
            "onnx_bytes": len(onnx), "flavors": flavors}


def render(r: dict) -> list[str]:
    out = ["| model | file size | single-image latency (median / p90) | x ONNX Runtime | conversion | "
           "max abs diff to the server |", "| --- | --- | --- | --- | --- | --- |"]
    s, o = r["server_in_process"], r["onnxruntime_model"]
    out.append(f"| cvbot in process (decode + resize + model) | - | {s['median_ms']} / {s['p90_ms']} ms | - | - | 0 |")
    out.append(f"| classifier graph in ONNX Runtime | {r['onnx_bytes'] / 1e6:.1f} MB | "
               f"{o['median_ms']} / {o['p90_ms']} ms | 1.00 | - | - |")
    for flavor, f in r["flavors"].items():
        out.append(f"| {flavor} | {f['bytes'] / 1e6:.1f} MB | {f['median_ms']} / {f['p90_ms']} ms | "
                   f"{f['ratio_to_onnxruntime']:.2f} | {f['convert_s']} s | {f['max_abs_diff_to_server']:.1e} |")
    out += ["", f"Load average {r['load_average']}; one {r['image_side']} px image, batch of one, each flavor "
            "loaded as Microsoft's sample loads it, in the converter virtualenv."]
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cvbot-bench-tf-") as d:
        results = run(Config(quick="--quick" in sys.argv[1:]), Path(d))
    print(json.dumps(results, indent=1))
    print("\n".join(render(results)))
