"""Benchmark 5: `cvbot serve` memory and start-up, with Compact and with CLIP ViT-B-32 preloaded."""
from __future__ import annotations

import http.client
import time
from pathlib import Path

from .common import Config, load_average, megapixel_jpeg
from .serve import classify, classify_path, prepare_project, server_env, start_server


def clip_checkpoint(path: Path) -> Path:
    """A local open_clip ViT-B-32 checkpoint with random weights (no download is possible here)."""
    if not path.exists():
        import open_clip
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.rename(path)
    return path


_BREAKDOWN = """
import json, os, sys, time
def rss():
    f = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
    return int(f["VmRSS"].split()[0]) / 1024, int(f["VmHWM"].split()[0]) / 1024
out = {"python_mb": rss()[0]}
sys.path.insert(0, os.getcwd())
t = time.perf_counter(); import onnxruntime
out["import_onnxruntime_s"], out["after_import_onnxruntime_mb"] = time.perf_counter() - t, rss()[0]
t = time.perf_counter(); from core.backbones import BackboneSettings, ClipBackbone
out["import_core_s"], out["after_import_core_mb"] = time.perf_counter() - t, rss()[0]
t = time.perf_counter()
bb = ClipBackbone("General", checkpoint=sys.argv[1], settings=BackboneSettings(cache_dir=sys.argv[2]))
out["load_s"] = time.perf_counter() - t
out["after_load_mb"], out["peak_mb"] = rss()
from core.backbones.clip_export import data_path
out["onnx_file_mb"] = (os.path.getsize(bb.onnx_path()) + os.path.getsize(data_path(bb.onnx_path()))) / 2**20
out["runtime"], out["torch_imported"] = bb.runtime, "torch" in sys.modules
print(json.dumps(out))
"""


def clip_breakdown(ckpt: Path, cache_dir: Path) -> dict:
    """Where CLIP's start-up time and memory go, in a fresh process with the model cache warm: imports, then
    the image tower's ONNX Runtime session from the cached export."""
    import json
    import subprocess
    import sys

    from .common import ROOT

    out = subprocess.run([sys.executable, "-c", _BREAKDOWN, str(ckpt), str(cache_dir)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return {"error": out.stderr[-1000:]}
    return {k: round(v, 2) if isinstance(v, float) else v
            for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def _measure(env: dict, project_id: str | None, starts: int) -> dict:
    jpeg = megapixel_jpeg()
    best = None
    for _ in range(starts):
        server = start_server(env)
        try:
            rss_healthy, peak_healthy = server.rss_mb()
            first_s = None
            if project_id:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                t = time.perf_counter()
                out = classify(conn, classify_path(project_id, True), jpeg)
                first_s = time.perf_counter() - t
                assert out["predictions"]
                for _ in range(20):
                    classify(conn, classify_path(project_id, True), jpeg)
                conn.close()
            rss_after, peak_after = server.rss_mb()
        finally:
            server.stop()
        run = {"healthy_s": round(server.healthy_s, 3),
               "first_prediction_after_healthy_s": None if first_s is None else round(first_s, 3),
               "rss_when_healthy_mb": round(rss_healthy, 1), "peak_rss_mb": round(max(peak_healthy, peak_after), 1),
               "rss_after_21_predictions_mb": round(rss_after, 1)}
        if best is None or run["healthy_s"] < best["healthy_s"]:
            best = {**run, "peak_rss_mb": max(run["peak_rss_mb"], best["peak_rss_mb"]) if best else run["peak_rss_mb"]}
    best["starts"] = starts
    return best


def run(cfg: Config, tmp: Path) -> dict:
    result: dict = {"load_average": load_average()}
    data_dir = tmp / "serve5-data"
    env = server_env(data_dir)
    project_id = prepare_project(env, "Compact", per_tag=cfg.pick(10, 5), name="startup")
    result["Compact"] = _measure(env, project_id, cfg.pick(3, 1))

    ckpt = clip_checkpoint(tmp / "clip-vit-b-32-random.pt")
    # a model cache of its own, empty: the first start exports the image tower to ONNX (once per weights)
    clip_models = tmp / "clip-models"
    clip_env = server_env(data_dir, CVBOT_GENERAL_CHECKPOINT=ckpt, CVBOT_DEFAULT_DOMAIN="General",
                          CVBOT_MODEL_DIR=clip_models)
    first = _measure(clip_env, None, 1)
    # quick mode: start-up and memory only (training a CLIP project first takes longer than the rest)
    clip_project = None if cfg.quick else prepare_project(clip_env, "General", per_tag=5, name="startup-clip")
    result["CLIP ViT-B-32"] = _measure(clip_env, clip_project, cfg.pick(2, 1))
    result["CLIP ViT-B-32"]["first_start"] = {"healthy_s": first["healthy_s"], "peak_rss_mb": first["peak_rss_mb"]}
    result["CLIP ViT-B-32"]["breakdown"] = clip_breakdown(ckpt, clip_models)
    result["CLIP ViT-B-32"]["note"] = ("random weights from a local checkpoint (CVBOT_GENERAL_CHECKPOINT), "
                                       "CVBOT_DEFAULT_DOMAIN=General so that it is preloaded; its image tower runs "
                                       "in ONNX Runtime from an export in the model cache")
    result["note"] = ("healthy_s: from starting the process to /healthz answering 200 (the default domain's model "
                      "is loaded before the server listens); model cache warm (ONNX export done)")
    return result
