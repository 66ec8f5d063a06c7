"""Benchmark 15: unknown images (issue #14). How well candidate unknown scores, computed from the L2-normalised
Compact embeddings and the training set, rank unknown images above known ones (AUROC), next to max-softmax
measured on the same splits; and what cvbot's chosen score (core.unknown: max-probability gap + 1-NN distance in
the standardised embedding space, calibrated on held-out training values) flags at its default threshold.

- near unknowns: train on 6 of the 8 Tux Paint stamp categories (80 % of their images), known = the other 20 %
  of those 6, unknown = every image of the 2 left out; every pair of left-out categories (28) in turn;
- far unknowns: train on 80 % of all 8 categories, known = the other 20 %, unknown = Fashion-MNIST test items
  (several random splits).
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np

from .common import Config, fashion_mnist_test, onehot, tuxpaint_dataset

CANDIDATES = {
    "max-softmax": "1 − the largest probe probability (the reference)",
    "energy": "−logsumexp of the probe's logits",
    "mahalanobis": "class-conditional Gaussian, shared covariance shrunk halfway to its mean variance: the "
                   "smallest Mahalanobis distance to a class mean",
    "relative mahalanobis": "that distance minus the distance to one Gaussian fitted on all training images",
    "knn-1": "1 − cosine similarity to the nearest training image",
    "knn-5": "1 − cosine similarity to the 5th nearest training image",
    "knn-1 standardised": "knn-1 with each embedding dimension centred and divided by its spread over the "
                          "training images",
    "max-softmax + mahalanobis": "mean of the two, standardised on the out-of-fold training images",
    "max-softmax + knn-1": "mean of the two, standardised on the out-of-fold training images (cvbot's score "
                           "before this run's choice)",
    "max-softmax + knn-1 standardised, blocks 14-16": "max-softmax, knn-1 standardised, and knn-1 standardised "
                                                      "on the pooled outputs of EfficientNet-Lite0's last three "
                                                      "blocks, equally weighted (needs features the embedding "
                                                      "does not keep)",
    "cvbot (max-softmax + knn-1 standardised)": "core.unknown.UnknownScorer: 1/3 max-probability gap + 2/3 "
                                                "knn-1 standardised, each standardised and calibrated on held-out "
                                                "training values (out-of-fold probabilities, leave-one-out "
                                                "distances): the chosen score",
}
CHOSEN = "cvbot (max-softmax + knn-1 standardised)"
LAYERS = "max-softmax + knn-1 standardised, blocks 14-16"
BLOCKS = (14, 15, 16)  # outputs of EfficientNet-Lite0's blocks 13, 14, 15 (block 0 = the stem's output)
SHRINK = 0.5


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(unknown scores above known), ties counting half (the Mann-Whitney statistic)."""
    from scipy.stats import rankdata

    r = rankdata(np.r_[known, unknown])
    n0, n1 = len(known), len(unknown)
    return float((r[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def _gaussians(X: np.ndarray, y: np.ndarray):
    d = X.shape[1]

    def precision(R: np.ndarray) -> np.ndarray:
        S = R.T @ R / len(R)
        return np.linalg.inv((1 - SHRINK) * S + SHRINK * np.trace(S) / d * np.eye(d))

    classes = np.unique(y)
    mu = np.stack([X[y == c].mean(0) for c in classes])
    P = precision(X - mu[np.searchsorted(classes, y)])
    m0 = X.mean(0)
    return mu, P, m0, precision(X - m0)


def _maha(Q: np.ndarray, g) -> tuple[np.ndarray, np.ndarray]:
    mu, P, m0, P0 = g

    def quad(D: np.ndarray, A: np.ndarray) -> np.ndarray:  # row-wise D A Dᵀ, through one matrix product
        return ((D @ A) * D).sum(1)

    M = np.stack([quad(Q - m, P) for m in mu], 1)
    M0 = quad(Q - m0, P0)
    return M.min(1), (M - M0[:, None]).min(1)


def _standardised_knn(Xt: np.ndarray, Xq: np.ndarray) -> np.ndarray:
    """knn-1 in the space centred and scaled per dimension by the training rows (floored like core.unknown)."""
    from core.unknown import SPREAD_FLOOR, _l2

    A = _l2(Xt)
    mu, sd = A.mean(0), A.std(0)
    sd = np.maximum(sd, SPREAD_FLOOR * sd.mean() + 1e-9)
    return 1 - (_l2((_l2(Xq) - mu) / sd) @ _l2((A - mu) / sd).T).max(1)


def _oof(fn, folds: np.ndarray) -> np.ndarray:
    """fn(fitted-on rows, held-out rows) -> held-out scores, over the probe's folds."""
    out = np.empty(len(folds))
    for f in np.unique(folds):
        held = folds == f
        out[held] = fn(~held, held)
    return out


def _z(values: np.ndarray, oof: np.ndarray) -> np.ndarray:
    return (values - oof.mean()) / oof.std()


Layers = tuple[list[np.ndarray], list[np.ndarray]]


def candidate_scores(Xt: np.ndarray, yt: np.ndarray, Xq: np.ndarray,
                     layers: Layers | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Every candidate's score (higher = more unknown) for the query rows, from a probe trained as cvbot trains.
    `layers`: the training and query rows' intermediate-block features, for the multi-layer candidate."""
    from scipy.special import logsumexp

    from core.probe import LinearProbeCV
    from core.unknown import UnknownScorer, confidence_gap, nearest_distance

    k = int(yt.max()) + 1
    cv = LinearProbeCV().fit(Xt, onehot(yt, k))
    coef = cv.best_estimator_.coef_
    L = Xq @ coef[:-1] + coef[-1]
    P = cv.predict_proba(Xq)
    scorer = UnknownScorer().fit(Xt, cv.oof_, cv.folds_)
    S = Xq @ Xt.T
    g = _gaussians(Xt, yt)
    maha, rel = _maha(Xq, g)
    # the out-of-fold Mahalanobis and 1-NN distances of the training images, to standardise the combinations
    oof_maha = _oof(lambda a, b: _maha(Xt[b], _gaussians(Xt[a], yt[a]))[0], cv.folds_)
    oof_knn = _oof(lambda a, b: nearest_distance(Xt[b], Xt[a]), cv.folds_)
    conf, conf_oof = confidence_gap(P), confidence_gap(cv.oof_)
    out = {
        "max-softmax": conf,
        "energy": -logsumexp(L, axis=1),
        "mahalanobis": maha,
        "relative mahalanobis": rel,
        "knn-1": 1 - S.max(1),
        "knn-5": 1 - np.sort(S, 1)[:, -5],
        "knn-1 standardised": _standardised_knn(Xt, Xq),
        "max-softmax + mahalanobis": (_z(conf, conf_oof) + _z(maha, oof_maha)) / 2,
        "max-softmax + knn-1": (_z(conf, conf_oof) + _z(1 - S.max(1), oof_knn)) / 2,
        CHOSEN: scorer.score(Xq, P),
    }
    if layers is not None:
        parts = [_z(conf, conf_oof)]
        for Lt, Lq in zip([Xt, *layers[0]], [Xq, *layers[1]], strict=True):
            oof = _oof(lambda a, b: _standardised_knn(Lt[a], Lt[b]), cv.folds_)  # noqa: B023 - used at once
            parts.append(_z(_standardised_knn(Lt, Lq), oof))
        out[LAYERS] = np.mean(parts, axis=0)
    return out, {"probs": P, "threshold": scorer.threshold_}


def block_features(items: list[bytes], batch: int = 32) -> list[np.ndarray]:
    """The spatially averaged outputs of EfficientNet-Lite0's blocks in BLOCKS (PyTorch, the Compact weights),
    preprocessed exactly as the embedding is."""
    import torch

    from core.backbones.efficientnet import LITE_PREPROCESSING as pre
    from core.backbones.efficientnet import _FeatureNet
    from core.embedding import normalise_batch
    from core.images import decode_rgb

    net = _FeatureNet.build().net
    out: list[list[np.ndarray]] = [[] for _ in BLOCKS]
    for start in range(0, len(items), batch):
        pixels = np.stack([pre.crop(decode_rgb(b, min_side=pre.size)) for b in items[start:start + batch]])
        with torch.inference_mode():
            h = net._swish(net._bn0(net._conv_stem(torch.from_numpy(normalise_batch(pixels, pre)))))
            for i, block in enumerate(net._blocks[:max(BLOCKS)]):
                h = block(h, drop_connect_rate=0.0)
                if i + 1 in BLOCKS:
                    out[BLOCKS.index(i + 1)].append(h.mean((2, 3)).numpy())
    return [np.concatenate(parts) for parts in out]


def _scenario(Xt, yt, Xk, yk, Xu, layers=None) -> dict:
    """layers: (training, known, unknown) lists of block features, for the multi-layer candidate."""
    extra_layers = (None if layers is None
                    else (layers[0], [np.r_[k, u] for k, u in zip(layers[1], layers[2], strict=True)]))
    scores, extra = candidate_scores(Xt, yt, np.r_[Xk, Xu], extra_layers)
    n = len(Xk)
    row = {"auroc": {name: auroc(s[:n], s[n:]) for name, s in scores.items()}}
    chosen, thr = scores[CHOSEN], extra["threshold"]
    flagged_k, flagged_u = chosen[:n] >= thr, chosen[n:] >= thr
    top1 = extra["probs"][:n].argmax(1) == yk
    row.update({"known": n, "unknown": len(Xu), "flagged_known": float(flagged_k.mean()),
                "flagged_unknown": float(flagged_u.mean()), "top1": float(top1.mean()),
                "top1_answered": float(top1[~flagged_k].mean()) if (~flagged_k).any() else 0.0})
    return row


def _mean(rows: list[dict]) -> dict:
    out = {"runs": len(rows), "known": int(np.mean([r["known"] for r in rows])),
           "unknown": int(np.mean([r["unknown"] for r in rows]))}
    out["auroc"] = {name: round(float(np.mean([r["auroc"][name] for r in rows])), 4) for name in rows[0]["auroc"]}
    out["auroc_min"] = {name: round(float(np.min([r["auroc"][name] for r in rows])), 4)
                        for name in rows[0]["auroc"]}
    for key in ("flagged_known", "flagged_unknown", "top1", "top1_answered"):
        out[key] = round(float(np.mean([r[key] for r in rows])), 4)
    return out


def _split(idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = idx.copy()
    rng.shuffle(idx)
    cut = len(idx) // 5
    return idx[cut:], idx[:cut]


def run(cfg: Config, tmp: Path) -> dict:
    from .accuracy import _embed

    stamps, y, names = tuxpaint_dataset()
    if cfg.quick:  # a stratified subset, for speed: numbers, not the published figures
        keep = np.concatenate([np.flatnonzero(y == c)[:30] for c in range(len(names))])
        stamps, y = [stamps[i] for i in keep], y[keep]
    t = time.perf_counter()
    X = _embed(stamps)
    fashion, _, _ = fashion_mnist_test(per_class=cfg.pick(100, 10))
    F = _embed(fashion)
    embed_s = time.perf_counter() - t
    BX, BF = block_features(stamps), block_features(fashion)
    rng = np.random.default_rng(cfg.seed)
    t = time.perf_counter()
    pairs = list(itertools.combinations(range(len(names)), 2))
    if cfg.quick:
        pairs = pairs[:2]
    near = []
    for pair in pairs:
        known = [c for c in range(len(names)) if c not in pair]
        inside = np.isin(y, known)
        tr, te = _split(np.flatnonzero(inside), rng)
        remap = np.full(len(names), -1)
        remap[known] = np.arange(len(known))
        near.append(_scenario(X[tr], remap[y[tr]], X[te], remap[y[te]], X[~inside],
                              ([b[tr] for b in BX], [b[te] for b in BX], [b[~inside] for b in BX])))
    far = []
    for _ in range(cfg.pick(5, 1)):
        tr, te = _split(np.arange(len(y)), rng)
        far.append(_scenario(X[tr], y[tr], X[te], y[te], F, ([b[tr] for b in BX], [b[te] for b in BX], BF)))
    out = {"candidates": CANDIDATES, "chosen": CHOSEN, "categories": names, "images": len(y),
           "fashion_images": len(F), "embed_s": round(embed_s, 2), "score_s": round(time.perf_counter() - t, 2),
           "near": _mean(near), "far": _mean(far),
           "near_pairs": [[names[a], names[b]] for a, b in pairs],
           "near_by_pair": {f"{names[a]}+{names[b]}": {"cvbot": round(r["auroc"][CHOSEN], 3),
                                                        "max-softmax": round(r["auroc"]["max-softmax"], 3)}
                            for (a, b), r in zip(pairs, near, strict=True)}}
    for kind in ("near", "far"):
        a = out[kind]["auroc"]
        print(f"  unknown {kind}: " + ", ".join(f"{name} {v:.3f}" for name, v in a.items()), flush=True)
        print(f"  unknown {kind}: AUROC cvbot {a[CHOSEN]:.3f}, max-softmax {a['max-softmax']:.3f}; flagged "
              f"unknown {out[kind]['flagged_unknown']:.2f}, known {out[kind]['flagged_known']:.2f}", flush=True)
    return out
