"""`python -m benchmarks --quick` (what CI runs after the tests): every benchmark runs and produces its numbers.
Nothing about timings is asserted (shared, noisy machines)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TUXPAINT, missing_debian_data

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TUXPAINT.is_dir(), reason=missing_debian_data("tuxpaint-stamps-default")),
]


def _numbers(x):
    if isinstance(x, bool):
        return
    if isinstance(x, (int, float)):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from _numbers(v)


def test_quick_benchmarks_write_every_benchmarks_numbers(tmp_path):
    out_json, out_md = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    run = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--json", str(out_json),
                          "--markdown", str(out_md)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out_json.read_text())
    assert results["quick"] is True and results["machine"]["cores"]
    benchmarks = results["benchmarks"]
    assert {b["number"] for b in benchmarks.values()} == {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
    if not os.environ.get("CVBOT_TEST_POSTGRES_URL") and not os.environ.get("CVBOT_BENCH_POSTGRES_URL"):
        assert "CVBOT_TEST_POSTGRES_URL" in benchmarks.pop("queue")["skipped"]  # needs PostgreSQL
    for key, b in benchmarks.items():
        assert "error" not in b, (key, b.get("error"))
        values = list(_numbers(b["results"]))
        assert values and all(math.isfinite(v) for v in values), key
    emb = benchmarks["embedding"]["results"]
    assert emb["Compact"]["raw_best"]["images_per_s"] > 0 and emb["CLIP ViT-B-32"]["raw_best"]["images_per_s"] > 0
    assert all(s["best"]["images_per_s"] > 0 for s in emb["Compact"]["sets"].values())
    assert all(r["cvbot_s"] > 0 and r["sklearn_s"] > 0 for r in benchmarks["training"]["results"]["rows"])
    assert benchmarks["incremental"]["results"]["embedded_on_retrain"] == 10
    pred = benchmarks["prediction"]["results"]
    assert pred["in_process"]["requests"] >= 20 and pred["http_store"]["p50_ms"] > 0
    assert pred["http_concurrent"]["requests_per_s"] > 0
    server = benchmarks["server"]["results"]
    assert server["Compact"]["peak_rss_mb"] > 0 and server["CLIP ViT-B-32"]["healthy_s"] > 0
    assert all(a["cvbot"]["accuracy"] > 0.5 for a in benchmarks["accuracy"]["results"].values())
    assert len(benchmarks["scaling"]["results"]["rows"]) >= 2
    startup = benchmarks["startup"]["results"]
    assert set(startup["ratio_to_import_sqlalchemy"]) == {"cvbot --help", "cvbot project list --json"}
    assert all(c["median_s"] > 0 for c in startup["commands"].values())
    attack = benchmarks["attack"]["results"]
    assert attack["one_bit_attack"]["requests"] > 0 and attack["rgb_alone"]["peak_above_idle_mb"] > 0
    assert not attack["one_bit_attack"]["other_statuses"] and not attack["rgb_attack"]["other_statuses"]
    blobs = benchmarks["blobstore"]["results"]
    assert all(blobs[kind]["upload_images_per_s"] > 0 and blobs[kind]["first_training_images_per_s"] > 0
               for kind in ("local", "s3"))
    assert set(blobs["ratio_s3_to_local"]) == {"blob_write_mb_s", "blob_read_mb_s", "upload_images_per_s",
                                               "first_training_images_per_s"}
    labelling = benchmarks["labelling"]["results"]
    assert set(labelling["suggestions"]["orders"]) == {"random", "suggested"}
    assert all(v["mean"] > 0.3 for by in labelling["suggestions"]["orders"].values() for v in by.values())
    assert labelling["audit"]["rows"][0]["flipped"] > 0 and 0 <= labelling["audit"]["recall_mean"] <= 1
    exports = benchmarks["export_platforms"]["results"]
    assert exports["dockerfile"]["http_image"]["p50_ms"] > 0 and exports["dockerfile"]["zip_bytes"] > 0
    assert exports["server_in_process"]["p50_ms"] > 0
    assert "skipped" in exports["openvino"] or exports["openvino"]["f32"]["p50_ms"] > 0
    if "queue" in benchmarks:
        queue = benchmarks["queue"]["results"]
        assert queue["overhead"]["jobs"] > 0 and queue["overhead"]["p50_ms"] > 0
        assert set(queue["workers"]) == {"1 worker", "2 workers"}
        assert all(w["images_per_s"] > 0 and len(w["cpu_s"]) == int(name[0]) for name, w in queue["workers"].items())
    tf = benchmarks["export_tf"]["results"]
    assert tf["server_in_process"]["median_ms"] > 0 and tf["onnxruntime_model"]["median_ms"] > 0
    assert all(f["bytes"] > 0 and f["median_ms"] > 0 and f["max_abs_diff_to_server"] < 1e-4
               for f in tf["flavors"].values()) and tf["flavors"]
    unknown = benchmarks["unknown"]["results"]
    for kind in ("near", "far"):
        u = unknown[kind]
        assert set(u["auroc"]) == set(unknown["candidates"]) and all(0 <= a <= 1 for a in u["auroc"].values())
        assert u["known"] > 0 and u["unknown"] > 0 and 0 <= u["flagged_known"] <= 1
    assert results["targets"] and all(t["status"] in ("met", "missed") for t in results["targets"])
    md = out_md.read_text()
    for title in ("Embedding throughput", "Training time", "Incremental retraining", "Prediction latency",
                  "Memory and start-up", "Accuracy on real data", "Scaling in images", "CLI start-up",
                  "Hostile images", "Images on S3 versus local disk", "Labelling help",
                  "Exported models: OpenVINO and DockerFile", "Exported models: TensorFlow",
                  "## Targets"):
        assert title in md
