"""Custom Vision-style performance from stored out-of-fold probabilities (see core.probe.LinearProbeCV).

An `Evaluation` keeps everything needed to recompute precision, recall and average precision at any
threshold without retraining; the fold-to-fold spread is reported as precisionStdDeviation /
recallStdDeviation.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass
class Evaluation:
    """Everything needed to recompute performance at any threshold without retraining."""

    image_ids: list[str]
    Y: npt.NDArray[np.float32]  # (n, k) 0/1 labels
    oof: npt.NDArray[np.float32]  # (n, k) out-of-fold probabilities
    folds: npt.NDArray[np.integer[Any]]  # (n,) fold of each image
    tag_ids: list[str]
    tag_names: list[str]
    tag_types: list[str]
    multilabel: bool
    C: float

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(
            buf, image_ids=np.array(self.image_ids), Y=self.Y.astype(np.uint8), oof=self.oof.astype(np.float32),
            folds=self.folds, tag_ids=np.array(self.tag_ids), tag_names=np.array(self.tag_names),
            tag_types=np.array(self.tag_types), multilabel=np.bool_(self.multilabel), C=np.float64(self.C),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Evaluation:
        z = np.load(io.BytesIO(data))
        return cls(
            image_ids=[str(s) for s in z["image_ids"]], Y=z["Y"].astype(np.float32), oof=z["oof"],
            folds=z["folds"], tag_ids=[str(s) for s in z["tag_ids"]], tag_names=[str(s) for s in z["tag_names"]],
            tag_types=[str(s) for s in z["tag_types"]], multilabel=bool(z["multilabel"]), C=float(z["C"]),
        )


def average_precision(y: npt.ArrayLike, score: npt.NDArray[np.floating[Any]]) -> float:
    """scikit-learn's average_precision_score for one binary column (sum over decreasing thresholds of the
    recall gained times the precision there), in a few numpy passes: performance() calls it per tag."""
    order = np.argsort(score, kind="mergesort")[::-1]
    s, t = score[order], np.asarray(y, np.float64)[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tps = np.cumsum(t)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _pr(tp: float, npred: float, npos: float) -> tuple[float, float]:
    precision = tp / npred if npred else 0.0
    recall = tp / npos if npos else 0.0
    return precision, recall


def performance(ev: Evaluation, threshold: float) -> dict[str, Any]:
    """Custom Vision's iteration performance at `threshold`, from stored out-of-fold probabilities."""
    Y, P = ev.Y, ev.oof
    pred = threshold <= P
    regular = [i for i, t in enumerate(ev.tag_types) if t != "Negative"]
    per_tag = []
    for i, (tid, name) in enumerate(zip(ev.tag_ids, ev.tag_names, strict=True)):
        y, p = Y[:, i] > 0, pred[:, i]
        precision, recall = _pr(float((y & p).sum()), float(p.sum()), float(y.sum()))
        fold_p, fold_r = [], []
        for f in np.unique(ev.folds):
            m = ev.folds == f
            fp, fr = _pr(float((y[m] & p[m]).sum()), float(p[m].sum()), float(y[m].sum()))
            fold_p.append(fp)
            fold_r.append(fr)
        ap = average_precision(y, P[:, i]) if y.any() and not y.all() else (1.0 if y.all() else 0.0)
        per_tag.append({
            "id": tid, "name": name, "type": ev.tag_types[i], "precision": precision, "recall": recall,
            "averagePrecision": ap, "precisionStdDeviation": float(np.std(fold_p)),
            "recallStdDeviation": float(np.std(fold_r)), "imageCount": int(y.sum()),
        })
    cols = regular or list(range(len(ev.tag_ids)))
    Yr, Pr = Y[:, cols] > 0, pred[:, cols]
    precision, recall = _pr(float((Yr & Pr).sum()), float(Pr.sum()), float(Yr.sum()))
    fold_p, fold_r = [], []
    for f in np.unique(ev.folds):
        m = ev.folds == f
        fp, fr = _pr(float((Yr[m] & Pr[m]).sum()), float(Pr[m].sum()), float(Yr[m].sum()))
        fold_p.append(fp)
        fold_r.append(fr)
    result = {
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "averagePrecision": float(np.mean([per_tag[i]["averagePrecision"] for i in cols])),
        "precisionStdDeviation": float(np.std(fold_p)),
        "recallStdDeviation": float(np.std(fold_r)),
        "perTagPerformance": per_tag,
        "imageCount": int(len(Y)),
        "folds": int(len(np.unique(ev.folds))),
        "C": ev.C,
    }
    if not ev.multilabel:
        truth, guess = Y.argmax(1), P.argmax(1)
        k = len(ev.tag_ids)
        cm = np.zeros((k, k), int)
        np.add.at(cm, (truth, guess), 1)
        result["accuracy"] = float((truth == guess).mean())
        result["confusionMatrix"] = {"labels": list(ev.tag_names), "matrix": cm.tolist()}
    return result
