"""Stratified k-fold evaluation with out-of-fold probabilities, and Custom Vision-style performance.

The regularisation strength is selected on the same folds (the k-fold log-loss of each C on a
warm-started path, as LogisticRegressionCV does): every fold model is fitted for every C in the grid,
only on its training rows (held-out rows carry zero weight), and the out-of-fold probabilities reported
are those of the selected C. With a five-value grid the selection bias is small next to the fold-to-fold
spread, which is reported as precisionStdDeviation / recallStdDeviation.

How C is selected, precisely: the path is solved to a looser tolerance (PATH_TOL, enough to rank the Cs:
their log-losses differ by far more than that), the C with the lowest out-of-fold log-loss wins (ties go
to the larger C), and the selected C's fold models are then taken on to the final model's tolerance
(DEFAULT_TOL) from where the path left them; the out-of-fold probabilities are theirs. `scores` holds the
path's log-loss for every C, the selected one's recomputed after that refinement.

Speed (see core.probe): the folds share one label-free rotation of the features and advance in lock-step,
so each iteration's matrix products are one wide product for all folds. The final model, fitted on every
image afterwards, starts from the mean of the fold models at the selected C (it is not evaluated out of
fold, so that start leaks nothing).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .probe import DEFAULT_CS, DEFAULT_TOL, Solver, _label_key, _warm_starts, design_for, sample_weights

MAX_FOLDS = 5
PATH_TOL = 1e-4  # the C path's tolerance (see cross_validate); the selected C is refined to DEFAULT_TOL


def n_folds(Y: np.ndarray, multilabel: bool, k: int = MAX_FOLDS) -> int:
    counts = Y.sum(0)
    present = counts[counts > 0]
    smallest = int(present.min()) if len(present) else 0
    if multilabel:
        smallest = min(smallest, int((len(Y) - present).min()))
    return max(2, min(k, smallest))


def kfold_assignments(Y: np.ndarray, multilabel: bool, k: int = MAX_FOLDS, seed: int = 0) -> np.ndarray:
    """Fold index per image: StratifiedKFold (Multiclass) or iterative stratification (Multilabel)."""
    k = n_folds(Y, multilabel, k)
    folds = np.empty(len(Y), np.int32)
    if multilabel:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(Y)), Y.astype(int))
    else:
        from sklearn.model_selection import StratifiedKFold

        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(Y)), Y.argmax(1))
    for i, (_, test) in enumerate(splits):
        folds[test] = i
    return folds


@dataclass
class CVResult:
    C: float
    oof: np.ndarray  # (n, k) out-of-fold probabilities at the selected C
    folds: np.ndarray  # (n,) fold of each image
    scores: dict[float, float]  # mean held-out log-loss per C


def _log_loss(Y: np.ndarray, P: np.ndarray, multilabel: bool) -> float:
    W8 = sample_weights(Y, multilabel)
    P = np.clip(P, 1e-7, 1 - 1e-7)
    if multilabel:
        return float((W8 * -(Y * np.log(P) + (1 - Y) * np.log(1 - P))).sum() / W8.sum())
    return float((W8 * -np.log((P * Y).sum(1))).sum() / W8.sum())


def cross_validate(X: np.ndarray, Y: np.ndarray, multilabel: bool, Cs: tuple[float, ...] = DEFAULT_CS,
                   folds: np.ndarray | None = None, seed: int = 0, progress=None) -> CVResult:
    """k-fold out-of-fold probabilities at a C chosen on the same folds (see the module docstring)."""
    X = np.ascontiguousarray(X, np.float32)
    Y = np.asarray(Y, np.float32)
    if folds is None:
        folds = kfold_assignments(Y, multilabel, seed=seed)
    Cs = tuple(sorted(float(c) for c in Cs))
    design = design_for(X)
    nfold = int(folds.max()) + 1
    solver = Solver(design.Z, Y, multilabel, design.var, tol=PATH_TOL)
    # every fold walks the C path from strong to weak regularisation, each fit warm-started from the
    # previous one; the folds advance in lock-step so that their matrix products are shared
    tests = [np.flatnonzero(folds == f) for f in range(nfold)]
    tasks = [solver.task(np.flatnonzero(folds != f), Cs, keep=tests[f]) for f in range(nfold)]
    finished = [0]
    total_steps = nfold * (len(Cs) + 1)

    def tick():
        finished[0] += 1
        if progress and finished[0] % (len(Cs) + 1) == 0:
            progress(min(nfold, finished[0] * nfold // total_steps), nfold)

    solver.run(tasks, progress=tick if progress else None)
    oof = {C: _oof(Y.shape, tests, [t.results[i][2] for t in tasks], multilabel) for i, C in enumerate(Cs)}
    scores = {C: _log_loss(Y, oof[C], multilabel) for C in Cs}
    best = min(Cs, key=lambda C: (scores[C], -C))
    # the path stops each C at a looser tolerance, enough to rank the Cs; the selected C's fold models are
    # then taken to the final model's tolerance, so that the reported out-of-fold predictions are theirs
    if best == Cs[-1]:
        solver.refine_last(tasks, DEFAULT_TOL, progress=tick if progress else None)
        final = [t.results[-1] for t in tasks]
    else:
        i = Cs.index(best)
        again = [solver.task(np.flatnonzero(folds != f), [best], tasks[f].results[i][0], tasks[f].results[i][1],
                             keep=tests[f]) for f in range(nfold)]
        for t in again:
            t.tol = DEFAULT_TOL
        solver.run(again, progress=tick if progress else None)
        final = [t.results[-1] for t in again]
    oof[best] = _oof(Y.shape, tests, [r[2] for r in final], multilabel)
    scores[best] = _log_loss(Y, oof[best], multilabel)
    if progress:
        progress(nfold, nfold)
    # the final model (fitted on every image by LinearProbe.fit) starts from the fold models' mean
    Wm = sum(r[0] for r in final) / nfold
    bm = sum(r[1] for r in final) / nfold
    _warm_starts(design)[_label_key(Y, multilabel, best)] = (Wm, bm)
    return CVResult(C=best, oof=oof[best], folds=folds, scores=scores)


def _oof(shape, tests: list[np.ndarray], logits: list[np.ndarray], multilabel: bool) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    for rows, z in zip(tests, logits):
        out[rows] = _proba(z, multilabel)
    return out


def _proba(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    from scipy.special import expit, softmax

    if multilabel:
        return expit(logits).astype(np.float32)
    return softmax(logits, axis=1).astype(np.float32)


@dataclass
class Evaluation:
    """Everything needed to recompute performance at any threshold without retraining."""

    image_ids: list[str]
    Y: np.ndarray
    oof: np.ndarray
    folds: np.ndarray
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
    def from_bytes(cls, data: bytes) -> "Evaluation":
        z = np.load(io.BytesIO(data))
        return cls(
            image_ids=[str(s) for s in z["image_ids"]], Y=z["Y"].astype(np.float32), oof=z["oof"],
            folds=z["folds"], tag_ids=[str(s) for s in z["tag_ids"]], tag_names=[str(s) for s in z["tag_names"]],
            tag_types=[str(s) for s in z["tag_types"]], multilabel=bool(z["multilabel"]), C=float(z["C"]),
        )


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
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


def performance(ev: Evaluation, threshold: float) -> dict:
    """Custom Vision's iteration performance at `threshold`, from stored out-of-fold probabilities."""
    Y, P = ev.Y, ev.oof
    pred = P >= threshold
    regular = [i for i, t in enumerate(ev.tag_types) if t != "Negative"]
    per_tag = []
    for i, (tid, name) in enumerate(zip(ev.tag_ids, ev.tag_names)):
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
