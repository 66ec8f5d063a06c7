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
t = time.perf_counter(); import torch
out["import_torch_s"], out["after_import_torch_mb"] = time.perf_counter() - t, rss()[0]
t = time.perf_counter(); import open_clip
out["import_open_clip_s"], out["after_import_open_clip_mb"] = time.perf_counter() - t, rss()[0]
sys.path.insert(0, os.getcwd())
from core.backbones import BackboneSettings, ClipBackbone
t = time.perf_counter()
bb = ClipBackbone("General", checkpoint=sys.argv[1], settings=BackboneSettings(cache_dir=sys.argv[2]))
out["load_checkpoint_s"] = time.perf_counter() - t
out["after_load_mb"], out["peak_mb"] = rss()
out["parameters_mb"] = sum(p.numel() * p.element_size() for p in bb._net.parameters()) / 2**20
out["image_tower_parameters_mb"] = sum(p.numel() * p.element_size() for p in bb._net.visual.parameters()) / 2**20
print(json.dumps(out))
"""


def clip_breakdown(ckpt: Path) -> dict:
    """Where CLIP's start-up time and memory go, in a fresh process: imports, then the checkpoint."""
    import json
    import subprocess
    import sys

    from .common import ROOT, model_dir

    out = subprocess.run([sys.executable, "-c", _BREAKDOWN, str(ckpt), str(model_dir())], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return {"error": out.stderr[-1000:]}
    return {k: round(v, 2) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


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
    clip_env = server_env(data_dir, CVBOT_GENERAL_CHECKPOINT=ckpt, CVBOT_DEFAULT_DOMAIN="General")
    # quick mode: start-up and memory only (training a CLIP project first takes longer than the rest)
    clip_project = None if cfg.quick else prepare_project(clip_env, "General", per_tag=5, name="startup-clip")
    result["CLIP ViT-B-32"] = _measure(clip_env, clip_project, cfg.pick(2, 1))
    result["CLIP ViT-B-32"]["breakdown"] = clip_breakdown(ckpt)
    result["CLIP ViT-B-32"]["note"] = ("random weights from a local checkpoint (CVBOT_GENERAL_CHECKPOINT), "
                                       "CVBOT_DEFAULT_DOMAIN=General so that it is preloaded")
    result["note"] = ("healthy_s: from starting the process to /healthz answering 200 (the default domain's model "
                      "is loaded before the server listens); model cache warm (ONNX export done)")
    return result
