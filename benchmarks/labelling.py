"""Benchmark 11: labelling help on the Tux Paint stamps (issue #14, parts 2 and 3).

Suggested order: a fixed, stratified held-out test set (25 %); the rest is the unlabelled pool. Each seed starts from
the same `START` random labels for both orders; the random order then labels at random, the suggested order labels
`BATCH` images at a time in the order `core.labelling.suggestion_order` gives (the function `/cv suggest`, the CLI
and the API use), retraining the probe (`LinearProbeCV`, as training does) after each batch, as a person labelling
from `/cv suggest` and pressing `/cv train` would. Test accuracy is measured at each budget.

Mislabel audit: flip 5 % of the labels to another random category, train with k-fold cross-validation as training
does, rank with `core.labelling.audit_ranking` on the out-of-fold probabilities, and count the flipped images among
the first 2 × (number flipped) entries.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .common import Config, onehot, tuxpaint_dataset

START = 40
BATCH = 20
BUDGETS = (100, 200, 300)
TEST_FRACTION = 0.25


def held_out_split(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pool indices, test indices): a stratified TEST_FRACTION of each category is the test set."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[:max(1, round(len(idx) * TEST_FRACTION))])
    t = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(y)), t), t


def _fit(X: np.ndarray, y: np.ndarray):
    """The probe on the labelled images: columns are the categories seen so far (as a project's tags)."""
    from core.probe import LinearProbeCV

    classes = np.unique(y)
    col = {c: j for j, c in enumerate(classes)}
    Y = onehot(np.array([col[c] for c in y]), len(classes))
    return LinearProbeCV().fit(X, Y), classes


def _accuracy(model, classes: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    return float((classes[model.predict_proba(X).argmax(1)] == y).mean())


def suggested_labels(X: np.ndarray, y: np.ndarray, pool: np.ndarray, start: np.ndarray, budget: int,
                     batch: int = BATCH, **order_options) -> np.ndarray:
    """The pool images labelled, in order, when each batch follows `suggestion_order` of the probe trained so far."""
    from core.labelling import suggestion_order

    labelled = list(start)
    while len(labelled) < budget:
        model, _ = _fit(X[labelled], y[labelled])
        rest = np.setdiff1d(pool, labelled)
        P = model.predict_proba(X[rest])
        order = suggestion_order(P, X[rest], labelled=X[labelled], **order_options)
        labelled += [int(i) for i in rest[order[:min(batch, budget - len(labelled))]]]
    return np.array(labelled)


def run_suggestions(X: np.ndarray, y: np.ndarray, seeds: int, budgets=BUDGETS, variants=None) -> dict:
    pool, test = held_out_split(y)
    variants = variants or {"suggested": {}}
    curves: dict[str, dict[int, list[float]]] = {name: {b: [] for b in budgets} for name in ["random", *variants]}
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        random_order = rng.permutation(pool)
        start = random_order[:START]
        for b in budgets:
            model, classes = _fit(X[random_order[:b]], y[random_order[:b]])
            curves["random"][b].append(_accuracy(model, classes, X[test], y[test]))
        for name, options in variants.items():
            chosen = suggested_labels(X, y, pool, start, max(budgets), **options)
            for b in budgets:
                model, classes = _fit(X[chosen[:b]], y[chosen[:b]])
                curves[name][b].append(_accuracy(model, classes, X[test], y[test]))
    ceiling, classes = _fit(X[pool], y[pool])
    out = {"pool": int(len(pool)), "test": int(len(test)), "seeds": seeds, "start": START, "batch": BATCH,
           "whole_pool_accuracy": round(_accuracy(ceiling, classes, X[test], y[test]), 4), "orders": {}}
    for name, by_budget in curves.items():
        out["orders"][name] = {str(b): {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4),
                                        "min": round(float(np.min(v)), 4), "max": round(float(np.max(v)), 4),
                                        "runs": [round(x, 4) for x in v]}
                               for b, v in by_budget.items()}
    s200 = out["orders"]["suggested"].get("200")
    r300 = out["orders"]["random"].get("300")
    if s200 and r300:
        out["suggested_200_minus_random_300_points"] = round((s200["mean"] - r300["mean"]) * 100, 2)
    return out


def run_audit(X: np.ndarray, y: np.ndarray, seeds: int, fraction: float = 0.05) -> dict:
    from core.labelling import audit_ranking
    from core.probe import LinearProbeCV

    k = int(y.max()) + 1
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(2000 + seed)
        n_flip = max(1, round(len(y) * fraction))
        flipped = rng.choice(len(y), n_flip, replace=False)
        noisy = y.copy()
        for i in flipped:
            noisy[i] = rng.choice([c for c in range(k) if c != y[i]])
        cv = LinearProbeCV(seed=seed, refit=False).fit(X, onehot(noisy, k))
        ranking = audit_ranking(onehot(noisy, k), cv.oof_)
        top = {e.row for e in ranking[:2 * n_flip]}
        found = len(top & set(int(i) for i in flipped))
        right = sum(1 for e in ranking[:2 * n_flip] if e.row in set(flipped.tolist()) and e.suggested[0] == y[e.row])
        rows.append({"flipped": int(n_flip), "found_in_top": found, "recall": round(found / n_flip, 4),
                     "suggested_true_tag": right})
    recalls = [r["recall"] for r in rows]
    return {"images": int(len(y)), "seeds": seeds, "fraction": fraction, "rows": rows,
            "recall_mean": round(float(np.mean(recalls)), 4), "recall_std": round(float(np.std(recalls)), 4),
            "recall_min": round(float(np.min(recalls)), 4)}


def embed_tuxpaint(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    from .accuracy import _embed

    stamps, y, _ = tuxpaint_dataset()
    if cfg.quick:  # a stratified subset: numbers for CI, not the published figure
        keep = np.concatenate([np.flatnonzero(y == c)[:30] for c in range(int(y.max()) + 1)])
        stamps, y = [stamps[i] for i in keep], y[keep]
    return _embed(stamps), y


def run(cfg: Config, tmp: Path) -> dict:
    t = time.perf_counter()
    X, y = embed_tuxpaint(cfg)
    embed_s = time.perf_counter() - t
    t = time.perf_counter()
    budgets = cfg.pick(BUDGETS, (60, 100, 140))
    suggest = run_suggestions(X, y, cfg.pick(5, 1), budgets=budgets,
                              variants=cfg.pick({"suggested": {}, "uncertainty only":
                                                 {"diversity": False, "balance": False}}, None))
    suggest_s = time.perf_counter() - t
    t = time.perf_counter()
    audit = run_audit(X, y, cfg.pick(5, 1))
    audit_s = time.perf_counter() - t
    return {"images": int(len(y)), "embed_s": round(embed_s, 1), "suggestions": suggest,
            "suggestions_s": round(suggest_s, 1), "audit": audit, "audit_s": round(audit_s, 1)}
