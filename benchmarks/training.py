"""Benchmarks 2 (training time on cached embeddings, next to scikit-learn) and 7 (scaling in images)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

from .common import ROOT, Config, interleaved, load_average, onehot, synthetic_embeddings


def cvbot_training(X: np.ndarray, Y: np.ndarray, multilabel: bool, blob_dir: Path) -> dict:
    """What a training job does once the embeddings are cached: k-fold evaluation with C selection, the
    final fit, performance at the default threshold, and storing the probe and the evaluation."""
    from core.evaluation import Evaluation, performance
    from core.probe import LinearProbeCV
    from storage import LocalBlobStore

    cv = LinearProbeCV(multilabel=multilabel).fit(X, Y)  # as in a training job: its own Design, nothing cached
    probe = cv.best_estimator_
    k = Y.shape[1]
    ev = Evaluation([f"i{i}" for i in range(len(Y))], Y, cv.oof_, cv.folds_, [f"t{j}" for j in range(k)],
                    [f"tag {j}" for j in range(k)], ["Regular"] * k, multilabel, cv.C_)
    blobs = LocalBlobStore(blob_dir)
    blobs.put(probe.to_bytes())
    blobs.put(ev.to_bytes())
    perf = performance(ev, 0.5)
    return {"accuracy": perf.get("accuracy"), "C": cv.C_, "ap": perf["averagePrecision"]}


def sklearn_reference(X: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """A plain scikit-learn LogisticRegression (lbfgs, defaults but max_iter=1000 so that it converges):
    5-fold cross_val_predict for the out-of-fold accuracy, then the final fit on every image."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        P = cross_val_predict(LogisticRegression(max_iter=1000), X, y, method="predict_proba",
                              cv=StratifiedKFold(5, shuffle=True, random_state=seed))
        LogisticRegression(max_iter=1000).fit(X, y)
    return {"accuracy": float((P.argmax(1) == y).mean())}


def run_training(cfg: Config, tmp: Path) -> dict:
    sizes = cfg.pick([(1000, 8), (5000, 50), (20000, 50)], [(1000, 8), (5000, 50)])
    dims = cfg.pick([512, 1280], [512, 1280])
    rows = []
    for n, k in sizes:
        for d in dims:
            if cfg.quick and (n, d) == (5000, 1280):
                continue
            X, y = synthetic_embeddings(n, k, d, seed=cfg.seed)
            Y = onehot(y, k)
            repeats = cfg.pick(2 if n >= 20000 else 3, 1)
            res = interleaved({
                "cvbot": lambda X=X, Y=Y: cvbot_training(X, Y, False, tmp / "blobs"),
                "sklearn": lambda X=X, y=y: sklearn_reference(X, y, cfg.seed),
            }, repeats)
            cv, sk = res["cvbot"], res["sklearn"]
            rows.append({
                "images": n, "tags": k, "dim": d,
                "cvbot_s": round(cv["best_s"], 3), "cvbot_times_s": cv["times_s"],
                "sklearn_s": round(sk["best_s"], 3), "sklearn_times_s": sk["times_s"],
                "ratio": round(cv["best_s"] / sk["best_s"], 3),
                "cvbot_accuracy": round(cv["result"]["accuracy"], 4),
                "sklearn_accuracy": round(sk["result"]["accuracy"], 4),
                "cvbot_C": cv["result"]["C"], "load_average": load_average(),
            })
            print(f"  training {n}x{k}x{d}: cvbot {cv['best_s']:.2f} s (acc {cv['result']['accuracy']:.3f}), "
                  f"sklearn {sk['best_s']:.2f} s (acc {sk['result']['accuracy']:.3f})", flush=True)
    return {"rows": rows,
            "reference": "sklearn LogisticRegression(max_iter=1000) + 5-fold cross_val_predict + final fit",
            "data": "synthetic class-structured embeddings, L2-normalised (benchmarks.common.synthetic_embeddings)"}


# ------------------------------------------------------------------------------------ scaling (benchmark 7)
def _child(n: int, k: int, d: int, seed: int, blob_dir: str) -> None:
    """Runs in a fresh process: one training, its time and the process's peak RSS above the data."""
    import time

    from .common import rss_mb

    Xw, yw = synthetic_embeddings(200, 4, d, seed=seed + 1)  # imports, thread pools: not part of the figure
    cvbot_training(Xw, onehot(yw, 4), False, Path(blob_dir))
    del Xw, yw
    X, y = synthetic_embeddings(n, k, d, seed=seed)
    Y = onehot(y, k)
    base_rss, _ = rss_mb()
    t = time.perf_counter()
    result = cvbot_training(X, Y, False, Path(blob_dir))
    seconds = time.perf_counter() - t
    _, peak = rss_mb()
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "data_rss_mb": base_rss,
                      "features_mb": X.nbytes / 2**20, "accuracy": result["accuracy"]}))


def run_scaling(cfg: Config, tmp: Path) -> dict:
    sizes = cfg.pick([1000, 5000, 20000, 50000], [1000, 3000])
    k, d = 50, 512
    rows = []
    for n in sizes:
        best = None
        for _ in range(cfg.pick(2, 1)):
            out = subprocess.run(
                [sys.executable, "-c", "from benchmarks.training import _child; "
                                       f"_child({n}, {k}, {d}, {cfg.seed}, {str(tmp / 'blobs7')!r})"],
                cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if out.returncode != 0:
                raise RuntimeError(f"scaling child failed: {out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if best is None or r["seconds"] < best["seconds"]:
                best = r
        rows.append({"images": n, "tags": k, "dim": d, "seconds": round(best["seconds"], 3),
                     "peak_rss_mb": round(best["peak_rss_mb"], 1),
                     "rss_above_data_mb": round(best["peak_rss_mb"] - best["data_rss_mb"], 1),
                     "features_mb": round(best["features_mb"], 1), "accuracy": round(best["accuracy"], 4)})
        print(f"  scaling {n}x{k}x{d}: {best['seconds']:.2f} s, peak RSS {best['peak_rss_mb']:.0f} MB", flush=True)
    ns = np.log([r["images"] for r in rows])
    time_exp = float(np.polyfit(ns, np.log([r["seconds"] for r in rows]), 1)[0]) if len(rows) > 1 else math.nan
    mem_exp = (float(np.polyfit(ns, np.log([max(r["rss_above_data_mb"], 1.0) for r in rows]), 1)[0])
               if len(rows) > 1 else math.nan)
    return {"rows": rows, "time_exponent": round(time_exp, 3), "memory_exponent": round(mem_exp, 3),
            "note": "exponent = slope of log(time) against log(images), least squares over the sizes; 1.0 is linear"}
