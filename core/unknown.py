"""The unknown score: how unlike everything the project was trained on an image is, in [0, 1].

Two signals, both computed from the embedding and the trained probe's probabilities:

- *confidence*: 1 - the largest tag probability (the max-softmax baseline; the largest sigmoid for Multilabel);
- *distance*: 1 - the cosine similarity to the nearest training image, in the *standardised* embedding space:
  the L2-normalised embedding minus the training images' mean, each dimension divided by its spread over the
  training images (floored at a tenth of the mean spread), so that a dimension along which the training images
  barely vary counts as much as one along which they vary a lot.

Each is standardised by the mean and standard deviation of its *held-out* value over the training images (the
confidence an image gets from the fold models that did not see it; the distance to the nearest *other* training
image, in a space standardised by the other folds' images only), and the two standardised values are averaged
with weights 1/3 (confidence) and 2/3 (distance). That raw score is then calibrated on the same held-out values:
the unknown score is the fraction of the training images whose held-out raw score is below the image's, each
counted through a normal kernel (a smoothed empirical distribution function). A known-looking image therefore
lands about uniformly in [0, 1], and a threshold of 0.95 flags about 5 % of images like the training set (a
little fewer in practice: the fold models saw 80 % of the images, the final probe sees them all); an image far
beyond every training image scores 1.

Small, easy projects (a dozen images that the probe separates perfectly) have out-of-fold signals that barely
vary: standardised by that spread alone, a 94 %-confident answer would look extreme. So the spreads have floors
(MIN_CONFIDENCE_STD, MIN_DISTANCE_STD: five points of probability, 0.02 of cosine distance) and the kernel a
minimum width (MIN_BANDWIDTH); on real data sets the measured spreads are far above them (docs/unknown.md).

Iterations trained before the standardised distance (no centre, spreads or weights stored) score as they did:
centre 0, spreads 1 and equal weights give back the plain cosine distance and the plain mean.

`benchmarks/unknown.py` measures the candidates this was chosen from (energy, class-conditional and relative
Mahalanobis, k-th neighbour distances, combinations, intermediate-layer features) next to max-softmax;
docs/unknown.md has the figures.
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
SPREAD_FLOOR = 0.1  # of the mean per-dimension spread: the smallest spread a dimension is divided by
WEIGHTS = (1 / 3, 2 / 3)  # of the standardised confidence and distance in the raw score (docs/unknown.md)
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


def nearest_distance(Q: F32, R: F32, chunk: int = 2048, skip: npt.NDArray[np.intp] | None = None) -> F64:
    """1 - cosine similarity to the nearest row of R, for each (L2-normalised) row of Q, `chunk` rows of Q at a
    time (memory: chunk x len(R)); with `skip`, row i of Q is not compared with row skip[i] of R (itself)."""
    out = np.empty(len(Q), np.float64)
    for i in range(0, len(Q), chunk):
        S = Q[i:i + chunk] @ R.T
        if skip is not None:
            S[np.arange(len(S)), skip[i:i + chunk]] = -np.inf
        out[i:i + chunk] = 1.0 - S.max(axis=1).astype(np.float64)
    return out


def _moments(Xn: F32) -> tuple[F32, F32]:
    """The per-dimension mean and spread (floored at SPREAD_FLOOR of the mean spread) of L2-normalised rows."""
    center: F32 = Xn.mean(axis=0).astype(np.float32)
    spread = Xn.std(axis=0)
    floored: F32 = np.maximum(spread, np.float32(SPREAD_FLOOR * float(spread.mean()) + 1e-9)).astype(np.float32)
    return center, floored


class UnknownScorer:
    """Fitted at training time from the embeddings, the out-of-fold probabilities and the folds.

    Learned: `center_` and `spread_` (d,) the per-dimension mean and (floored) spread of the L2-normalised
    training embeddings, `references_` (n, d) the training embeddings standardised by them and L2-normalised
    (stored as float16), `weights_` of the two signals, `confidence_mean_`, `confidence_std_`, `distance_mean_`,
    `distance_std_` (of the out-of-fold signals, spreads floored),
    `calibration_` the sorted out-of-fold raw scores, `bandwidth_` the calibration kernel's width, and
    `threshold_` (the score from which an image is called unknown)."""

    center_: F32
    spread_: F32
    references_: F32
    weights_: tuple[float, float]
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
        self.center_, self.spread_ = _moments(Xn)
        self.weights_ = WEIGHTS
        # stored in half precision (half the blob); every use sees these same rounded values
        self.references_ = self.standardise(Xn).astype(np.float16).astype(np.float32)
        conf = confidence_gap(oof)
        dist = self._held_out_distances(Xn, fold_of)
        self.confidence_mean_, self.confidence_std_ = float(conf.mean()), max(float(conf.std()), MIN_CONFIDENCE_STD)
        self.distance_mean_, self.distance_std_ = float(dist.mean()), max(float(dist.std()), MIN_DISTANCE_STD)
        self.calibration_ = np.sort(self._raw(conf, dist))
        # Silverman's rule of thumb for the kernel's width, with a floor
        n = len(self.calibration_)
        self.bandwidth_ = max(1.06 * float(self.calibration_.std()) * n ** -0.2, MIN_BANDWIDTH)
        self.threshold_ = float(self.threshold)
        return self

    @staticmethod
    def _held_out_distances(Xn: F32, fold_of: npt.NDArray[Any]) -> F64:
        """Each training image's distance to the nearest other training image, in a space standardised by the
        images of the *other* folds only: the image's own values must not shape the spreads it is measured by
        (with a few dozen images in 1,280 dimensions they would make every training image look typical)."""
        dist = np.empty(len(Xn), np.float64)
        for f in np.unique(fold_of):
            held = fold_of == f
            center, spread = _moments(Xn[~held])
            Z = _l2((Xn - center) / spread).astype(np.float16).astype(np.float32)
            idx = np.flatnonzero(held)
            dist[idx] = nearest_distance(Z[idx], Z, skip=idx)
        return dist

    def standardise(self, X: npt.ArrayLike) -> F32:
        """Embeddings in the space the distance is measured in: L2-normalised, centred, divided by the
        per-dimension spread, L2-normalised again."""
        return _l2((_l2(X) - self.center_) / self.spread_)

    def _raw(self, conf: F64, dist: F64) -> F64:
        wc, wd = self.weights_
        out: F64 = (wc * (conf - self.confidence_mean_) / self.confidence_std_
                    + wd * (dist - self.distance_mean_) / self.distance_std_)
        return out

    def raw_score(self, X: npt.ArrayLike, P: npt.ArrayLike) -> F64:
        """The uncalibrated score (the weighted mean of the two standardised signals) of embeddings X with
        probabilities P."""
        return self._raw(confidence_gap(P), nearest_distance(self.standardise(X), self.references_))

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
            PREFIX + "center": self.center_.astype(np.float32),
            PREFIX + "spread": self.spread_.astype(np.float32),
            PREFIX + "weights": np.asarray(self.weights_, np.float64),
        }

    @classmethod
    def from_arrays(cls, z: Any) -> UnknownScorer | None:
        """The scorer stored in an .npz (None when it holds none: an iteration trained before the score)."""
        if PREFIX + "stats" not in z:
            return None
        stats = np.asarray(z[PREFIX + "stats"], np.float64)
        scorer = cls(threshold=float(stats[4]))
        scorer.references_ = np.asarray(z[PREFIX + "references"]).astype(np.float32)
        d = scorer.references_.shape[1]
        # before the standardised distance: centre 0, spreads 1, equal weights (the module docstring)
        scorer.center_ = (np.asarray(z[PREFIX + "center"], np.float32) if PREFIX + "center" in z
                          else np.zeros(d, np.float32))
        scorer.spread_ = (np.asarray(z[PREFIX + "spread"], np.float32) if PREFIX + "spread" in z
                          else np.ones(d, np.float32))
        wc, wd = (np.asarray(z[PREFIX + "weights"], np.float64) if PREFIX + "weights" in z else (0.5, 0.5))
        scorer.weights_ = (float(wc), float(wd))
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
