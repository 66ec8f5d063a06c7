"""Labelling help from a trained probe, as plain array maths: which untagged image to label next (suggestions) and
which stored tags look wrong (the mislabel audit).

Suggestion order (`suggestion_order`): the images the probe is least sure about come first, spread over the
embedding space and over the predicted tags, so that one batch of labels does not spend itself on near-duplicates
of one confusing corner. Greedily, each next image maximises

    uncertainty(i) ** UNCERTAINTY_POWER * novelty(i) * balance(i)

where uncertainty is one minus the margin between the two most probable tags (Multiclass) or one minus the
distance of the most doubtful tag from 0.5 (Multilabel), novelty is the cosine distance from the nearest image
already picked (or already labelled), scaled by the pool's typical distance and capped at 1, and balance
damps a predicted tag by how many of the picked images already carry it as their best guess. Benchmark 11
measures this order against random order and against uncertainty alone (BENCHMARKS.md).

Audit ranking (`audit_ranking`): each training image's out-of-fold probabilities (predicted by fold models that
never saw that image) against its stored tags. Multiclass: the suspicion is how far the most probable other tag
beats the stored one, `(max_{j != c} p_j - p_c + 1) / 2` in [0, 1]; Multilabel: the largest gap between a tag's
stored 0/1 and its probability.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]

UNCERTAINTY_POWER = 1.0
GREEDY_LIMIT = 512  # images ranked by the greedy rule; the rest of a larger pool follows by uncertainty alone
_CHUNK = 1024


def _as2d(P: npt.ArrayLike) -> npt.NDArray[np.float64]:
    A = np.asarray(P, np.float64)
    return A.reshape(len(A), -1) if A.ndim != 2 else A


def uncertainty(P: npt.ArrayLike, multilabel: bool = False) -> npt.NDArray[np.float64]:
    """(n,) in [0, 1], higher = less sure. Multiclass: 1 - (p_best - p_second); Multilabel: 1 - min_j |2 p_j - 1|."""
    A = _as2d(P)
    if len(A) == 0 or A.shape[1] == 0:
        return np.zeros(len(A))
    if multilabel:
        return np.asarray(1.0 - np.min(np.abs(2.0 * A - 1.0), axis=1), np.float64)
    if A.shape[1] == 1:
        return np.asarray(1.0 - A[:, 0], np.float64)
    top2 = -np.partition(-A, 1, axis=1)[:, :2]
    return np.clip(1.0 - (top2[:, 0] - top2[:, 1]), 0.0, 1.0)


def entropy(P: npt.ArrayLike, multilabel: bool = False) -> npt.NDArray[np.float64]:
    """(n,) Shannon entropy in nats: of the tag distribution (Multiclass) or the sum of each tag's binary entropy
    (Multilabel); Custom Vision's `predictionUncertainty`."""
    A = np.clip(_as2d(P), 1e-12, 1.0)
    if multilabel:
        B = np.clip(1.0 - A, 1e-12, 1.0)
        return np.asarray(-(A * np.log(A) + B * np.log(B)).sum(axis=1), np.float64)
    return np.asarray(-(A * np.log(A)).sum(axis=1), np.float64)


def _unit(X: npt.ArrayLike) -> npt.NDArray[np.float64]:
    A = np.asarray(X, np.float64)
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    return np.asarray(A / np.where(norms > 0, norms, 1.0), np.float64)


def _nearest_distance(X: npt.NDArray[np.float64], ref: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Cosine distance of each row of X (unit rows) to its nearest row of ref (unit rows); 2 where ref is empty."""
    out = np.full(len(X), 2.0)
    for start in range(0, len(ref), _CHUNK):
        sim = X @ ref[start:start + _CHUNK].T
        out = np.minimum(out, 1.0 - sim.max(axis=1))
    return np.asarray(np.clip(out, 0.0, 2.0), np.float64)


def suggestion_order(P: npt.ArrayLike, X: npt.ArrayLike, multilabel: bool = False,
                     labelled: npt.ArrayLike | None = None, limit: int = GREEDY_LIMIT,
                     diversity: bool = True, balance: bool = True) -> Ints:
    """The order in which to label the pool: indices into the rows of P (probabilities, (n, k)) and X (embeddings,
    (n, d)), most useful first. `labelled` (m, d) are the embeddings of the images labelled already: images close
    to them count as less novel. The first `limit` come from the greedy rule in the module docstring, the rest by
    uncertainty (then index, so the order is deterministic)."""
    A = _as2d(P)
    n = len(A)
    u = uncertainty(A, multilabel)
    by_uncertainty = np.lexsort((np.arange(n), -u)).astype(np.int64)
    if n == 0 or not (diversity or balance):
        return by_uncertainty
    U = _unit(X)
    steps = min(n, max(0, limit))
    novelty = np.ones(n)
    scale = 1.0
    if diversity:
        L = _unit(labelled) if labelled is not None and len(np.asarray(labelled)) else np.zeros((0, U.shape[1]))
        # the typical distance between pool images: novelty saturates at it, so that "far" is relative to the data
        sample = U[np.linspace(0, n - 1, min(n, 256)).astype(int)]
        sims = sample @ sample.T
        off = sims[~np.eye(len(sample), dtype=bool)]
        scale = float(np.median(1.0 - off)) if off.size else 1.0
        scale = scale if scale > 1e-6 else 1.0
        dist = _nearest_distance(U, L) if len(L) else np.full(n, 2.0)
        novelty = np.minimum(dist / scale, 1.0)
    best = A.argmax(axis=1) if A.shape[1] else np.zeros(n, int)
    picked_per_tag = np.zeros(max(1, A.shape[1]))
    weight = np.power(np.maximum(u, 1e-6), UNCERTAINTY_POWER)
    taken = np.zeros(n, bool)
    order: list[int] = []
    for step in range(steps):
        score = weight * novelty
        if balance:
            share = picked_per_tag[best] / max(1.0, step / max(1, len(picked_per_tag)))
            score = score / (1.0 + share)
        score = np.where(taken, -np.inf, score)
        i = int(np.argmax(score))
        order.append(i)
        taken[i] = True
        picked_per_tag[best[i]] += 1
        if diversity:
            novelty = np.minimum(novelty, np.clip((1.0 - U @ U[i]) / scale, 0.0, 1.0))
    rest = [int(i) for i in by_uncertainty if not taken[i]]
    return np.array(order + rest, np.int64)


@dataclass
class AuditEntry:
    row: int  # index into the arrays given
    score: float  # suspicion in [0, 1]: higher = the stored tags are more likely wrong
    suggested: list[int]  # column(s) the out-of-fold prediction prefers


def audit_ranking(Y: npt.ArrayLike, P: npt.ArrayLike, multilabel: bool = False,
                  threshold: float = 0.5) -> list[AuditEntry]:
    """Rows of Y (stored 0/1 tags, (n, k)) whose out-of-fold probabilities P contradict them, most suspicious first
    (ties by row). Multiclass rows without exactly one stored tag are left out."""
    Yb = _as2d(Y) > 0.5
    A = _as2d(P)
    out: list[AuditEntry] = []
    if len(A) == 0:
        return out
    if multilabel:
        gap = np.abs(Yb.astype(np.float64) - A)
        score = gap.max(axis=1)
        for r in range(len(A)):
            suggested = [int(j) for j in np.flatnonzero(A[r] >= threshold)]
            out.append(AuditEntry(r, float(score[r]), suggested))
    else:
        for r in range(len(A)):
            stored = np.flatnonzero(Yb[r])
            if len(stored) != 1 or A.shape[1] < 2:
                continue
            c = int(stored[0])
            others = A[r].copy()
            others[c] = -np.inf
            j = int(np.argmax(others))
            out.append(AuditEntry(r, float((A[r, j] - A[r, c] + 1.0) / 2.0), [j]))
    out.sort(key=lambda e: (-e.score, e.row))
    return out


def tags_key(tag_ids: list[str] | tuple[str, ...] | Any) -> str:
    """A stable key of a set of tag ids: a recorded decision holds while an image's tags keep this key."""
    return ",".join(sorted(set(tag_ids)))
