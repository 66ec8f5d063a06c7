"""The unknown score: how unlike everything the project was trained on an image is, in [0, 1].

Two signals, both computed on the L2-normalised embedding and the trained probe's probabilities:

- *confidence*: 1 - the largest tag probability (the max-softmax baseline; the largest sigmoid for Multilabel);
- *distance*: 1 - the cosine similarity to the nearest training image (a 1-nearest-neighbour distance).

Each is standardised by the mean and standard deviation of its *out-of-fold* value over the training images
(an image scored by the fold models that did not see it, and against the training images of the other folds),
and the two standardised values are averaged. That raw score is then calibrated on the same out-of-fold values:
the unknown score is the fraction of the training images whose out-of-fold raw score is below the image's,
each counted through a normal kernel (a smoothed empirical distribution function). A known-looking image
therefore lands about uniformly in [0, 1], and a threshold of 0.95 flags about 5 % of images like the training
set (a little fewer in practice: a new image is compared with every training image, not with 80 % of them);
an image far beyond every training image scores 1.

Small, easy projects (a dozen images that the probe separates perfectly) have out-of-fold signals that barely
vary: standardised by that spread alone, a 94 %-confident answer would look extreme. So the spreads have floors
(MIN_CONFIDENCE_STD, MIN_DISTANCE_STD: five points of probability, 0.02 of cosine distance) and the kernel a
minimum width (MIN_BANDWIDTH); on real data sets the measured spreads are far above them (docs/unknown.md).

`benchmarks/unknown.py` measures the candidates this was chosen from (energy, class-conditional and relative
Mahalanobis, k-th neighbour distances, combinations) next to max-softmax; docs/unknown.md has the figures.
"""
from __future__ import annotations

import io
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from .model import DEFAULT_UNKNOWN_THRESHOLD

F32: TypeAlias = npt.NDArray[np.float32]
F64: TypeAlias = npt.NDArray[np.float64]

MIN_CONFIDENCE_STD = 0.05  # floors of the spreads the signals are standardised by (see the module docstring)
MIN_DISTANCE_STD = 0.02
MIN_BANDWIDTH = 0.25  # in standardised units: the narrowest kernel of the calibration
PREFIX = "unknown_"  # the scorer's arrays inside the probe's blob (an .npz), beside the probe's own


def _l2(X: npt.ArrayLike) -> F32:
    A = np.asarray(X, np.float32)
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    out: F32 = A / np.maximum(norms, np.float32(1e-12))
    return out


def confidence_gap(P: npt.ArrayLike) -> F64:
    """1 - the largest probability of each row."""
    out: F64 = 1.0 - np.asarray(P, np.float64).max(axis=1)
    return out


def nearest_distance(Q: F32, R: F32, chunk: int = 2048) -> F64:
    """1 - cosine similarity to the nearest row of R, for each (L2-normalised) row of Q."""
    out = np.empty(len(Q), np.float64)
    for i in range(0, len(Q), chunk):
        S = Q[i:i + chunk] @ R.T
        out[i:i + chunk] = 1.0 - S.max(axis=1).astype(np.float64)
    return out


class UnknownScorer:
    """Fitted at training time from the embeddings, the out-of-fold probabilities and the folds.

    Learned: `references_` (n, d) the training embeddings (L2-normalised; stored as float16), `confidence_mean_`,
    `confidence_std_`, `distance_mean_`, `distance_std_` (of the out-of-fold signals, spreads floored),
    `calibration_` the sorted out-of-fold raw scores, `bandwidth_` the calibration kernel's width, and
    `threshold_` (the score from which an image is called unknown)."""

    references_: F32
    confidence_mean_: float
    confidence_std_: float
    distance_mean_: float
    distance_std_: float
    calibration_: F64
    bandwidth_: float
    threshold_: float

    def __init__(self, threshold: float = DEFAULT_UNKNOWN_THRESHOLD):
        self.threshold = threshold

    def fit(self, X: npt.ArrayLike, oof: npt.ArrayLike, folds: npt.ArrayLike) -> UnknownScorer:
        """X: (n, d) training embeddings; oof: (n, k) their out-of-fold probabilities; folds: (n,) fold of each."""
        Xn = _l2(X)
        fold_of = np.asarray(folds)
        if len(Xn) < 2 or len(np.unique(fold_of)) < 2:
            raise ValueError("the unknown score needs at least two folds of training images")
        # stored in half precision (half the blob); every use sees these same rounded values
        self.references_ = Xn.astype(np.float16).astype(np.float32)
        conf = confidence_gap(oof)
        dist = np.empty(len(Xn), np.float64)
        for f in np.unique(fold_of):
            held = fold_of == f
            dist[held] = nearest_distance(self.references_[held], self.references_[~held])
        self.confidence_mean_, self.confidence_std_ = float(conf.mean()), max(float(conf.std()), MIN_CONFIDENCE_STD)
        self.distance_mean_, self.distance_std_ = float(dist.mean()), max(float(dist.std()), MIN_DISTANCE_STD)
        self.calibration_ = np.sort(self._raw(conf, dist))
        # Silverman's rule of thumb for the kernel's width, with a floor
        n = len(self.calibration_)
        self.bandwidth_ = max(1.06 * float(self.calibration_.std()) * n ** -0.2, MIN_BANDWIDTH)
        self.threshold_ = float(self.threshold)
        return self

    def _raw(self, conf: F64, dist: F64) -> F64:
        out: F64 = 0.5 * ((conf - self.confidence_mean_) / self.confidence_std_
                          + (dist - self.distance_mean_) / self.distance_std_)
        return out

    def raw_score(self, X: npt.ArrayLike, P: npt.ArrayLike) -> F64:
        """The uncalibrated score (the mean of the two standardised signals) of embeddings X with probabilities P."""
        return self._raw(confidence_gap(P), nearest_distance(_l2(X), self.references_))

    def calibrate(self, raw: npt.ArrayLike, chunk: int = 1024) -> F64:
        """Fraction of the training images whose out-of-fold raw score is below `raw`, each counted by the normal
        kernel's distribution function: mean over i of Φ((raw − calibration_i) / bandwidth_)."""
        from scipy.special import ndtr  # SciPy loads on first use, not when a CLI command starts

        r = np.atleast_1d(np.asarray(raw, np.float64))
        out = np.empty(len(r), np.float64)
        for i in range(0, len(r), chunk):
            out[i:i + chunk] = ndtr((r[i:i + chunk, None] - self.calibration_[None]) / self.bandwidth_).mean(axis=1)
        return out

    def score(self, X: npt.ArrayLike, P: npt.ArrayLike) -> F64:
        """The unknown score in [0, 1] of embeddings X (n, d) whose probe probabilities are P (n, k)."""
        return self.calibrate(self.raw_score(X, P))

    def is_unknown(self, score: float) -> bool:
        return score >= self.threshold_

    # ------------------------------------------------------------------ storage, beside the probe's arrays
    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {
            PREFIX + "references": self.references_.astype(np.float16),
            PREFIX + "stats": np.asarray([self.confidence_mean_, self.confidence_std_, self.distance_mean_,
                                          self.distance_std_, self.threshold_, self.bandwidth_], np.float64),
            PREFIX + "calibration": self.calibration_,
        }

    @classmethod
    def from_arrays(cls, z: Any) -> UnknownScorer | None:
        """The scorer stored in an .npz (None when it holds none: an iteration trained before the score)."""
        if PREFIX + "stats" not in z:
            return None
        stats = np.asarray(z[PREFIX + "stats"], np.float64)
        scorer = cls(threshold=float(stats[4]))
        scorer.references_ = np.asarray(z[PREFIX + "references"]).astype(np.float32)
        scorer.confidence_mean_, scorer.confidence_std_ = float(stats[0]), float(stats[1])
        scorer.distance_mean_, scorer.distance_std_ = float(stats[2]), float(stats[3])
        scorer.calibration_ = np.asarray(z[PREFIX + "calibration"], np.float64)
        scorer.threshold_ = float(stats[4])
        scorer.bandwidth_ = float(stats[5])
        return scorer

    @classmethod
    def from_bytes(cls, data: bytes) -> UnknownScorer | None:
        return cls.from_arrays(np.load(io.BytesIO(data)))


def with_scorer(probe_blob: bytes, scorer: UnknownScorer) -> bytes:
    """The probe's blob (an .npz) with the scorer's arrays added: one artifact per iteration, so no schema change;
    LinearProbe.from_bytes reads only its own keys."""
    z = np.load(io.BytesIO(probe_blob))
    arrays = {k: z[k] for k in z.files}
    arrays.update(scorer.to_arrays())
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
