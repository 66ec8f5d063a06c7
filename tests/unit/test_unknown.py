"""The unknown score's maths (core.unknown) on small synthetic arrays."""
import numpy as np
import pytest

from core.probe import LinearProbe, LinearProbeCV
from core.unknown import UnknownScorer, confidence_gap, nearest_distance, with_scorer


def _clusters(n_per=40, d=16, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(d, dtype=np.float32)[:k] * 3
    X = np.concatenate([c + 0.6 * rng.normal(size=(n_per, d)).astype(np.float32) for c in centres])
    y = np.repeat(np.arange(k), n_per)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, y, centres


@pytest.fixture(scope="module")
def fitted():
    X, y, centres = _clusters()
    cv = LinearProbeCV(Cs=(10.0,)).fit(X, y)
    return X, y, centres, cv, UnknownScorer().fit(X, cv.oof_, cv.folds_)


def test_signals_are_one_minus_max_probability_and_nearest_cosine():
    P = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    assert np.allclose(confidence_gap(P), [0.3, 0.6])
    R = np.eye(3, dtype=np.float32)
    Q = np.array([[1, 0, 0], [0.6, 0.8, 0]], np.float32)
    assert np.allclose(nearest_distance(Q, R), [0.0, 0.2])
    # chunking gives the same answer
    rng = np.random.default_rng(1)
    Q2 = rng.normal(size=(50, 3)).astype(np.float32)
    assert np.allclose(nearest_distance(Q2, R, chunk=7), nearest_distance(Q2, R))


def test_out_of_fold_statistics_and_raw_score(fitted):
    from core.unknown import SPREAD_FLOOR

    X, y, _, cv, s = fitted
    conf = confidence_gap(cv.oof_)
    assert s.confidence_mean_ == pytest.approx(conf.mean())
    assert s.confidence_std_ == pytest.approx(max(conf.std(), 0.05))
    # the distance of a training image is measured against the other training images (never itself: 0), in a
    # space standardised by the other folds' images only
    held_out = np.empty(len(X))
    for f in np.unique(cv.folds_):
        held = cv.folds_ == f
        mu, sd = X[~held].mean(0), X[~held].std(0)
        sd = np.maximum(sd, SPREAD_FLOOR * sd.mean())
        Z = (X - mu) / sd
        Z /= np.linalg.norm(Z, axis=1, keepdims=True)
        S = Z[held] @ Z.T
        S[np.arange(held.sum()), np.flatnonzero(held)] = -np.inf
        held_out[held] = 1 - S.max(1)
    assert np.all(held_out > 1e-4)
    assert s.distance_mean_ == pytest.approx(held_out.mean(), rel=2e-3)  # float16 references
    assert s.distance_std_ == pytest.approx(max(held_out.std(), 0.02), rel=2e-2)
    R = s.references_
    S = R @ R.T
    np.fill_diagonal(S, -np.inf)
    assert np.allclose(nearest_distance(R, R, chunk=7, skip=np.arange(len(R))), 1 - S.max(1))
    # raw score = 1/3 standardised confidence + 2/3 standardised distance (in the standardised embedding space)
    P = cv.predict_proba(X[:5])
    assert s.weights_ == pytest.approx((1 / 3, 2 / 3))
    want = ((confidence_gap(P) - s.confidence_mean_) / s.confidence_std_
            + 2 * (nearest_distance(s.standardise(X[:5]), s.references_) - s.distance_mean_) / s.distance_std_) / 3
    assert np.allclose(s.raw_score(X[:5], P), want)
    assert np.all(np.diff(s.calibration_) >= 0) and len(s.calibration_) == len(X)


def test_distance_is_measured_with_each_dimension_scaled_by_its_spread():
    """Training images vary a lot along dimension 0 and little along dimension 1: a step along dimension 1
    makes an image far more unusual than the same step along dimension 0."""
    from core.unknown import SPREAD_FLOOR

    rng = np.random.default_rng(5)
    X = np.c_[np.full(60, 4.0), 1.0 * rng.normal(size=60), 0.05 * rng.normal(size=60),
              np.zeros(60)].astype(np.float32)
    s = UnknownScorer().fit(X, np.tile([[0.9, 0.1]], (60, 1)), np.arange(60) % 3)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    spread = Xn.std(0)
    floor = SPREAD_FLOOR * spread.mean()
    assert np.allclose(s.center_, Xn.mean(0), atol=1e-6)
    assert np.allclose(s.spread_, np.maximum(spread, floor), atol=1e-6) and s.spread_[3] == pytest.approx(floor)
    Z = (Xn - s.center_) / s.spread_
    assert np.allclose(s.references_, Z / np.linalg.norm(Z, axis=1, keepdims=True), atol=2e-3)  # float16
    wide = np.array([[4.0, 1.5, 0.0, 0.0]], np.float32)
    narrow = np.array([[4.0, 0.0, 1.5, 0.0]], np.float32)
    P = [[0.9, 0.1]]
    assert s.raw_score(narrow, P)[0] > s.raw_score(wide, P)[0] + 1.0


def test_calibration_is_the_kernel_smoothed_fraction_of_out_of_fold_known_scores_below():
    from scipy.stats import norm

    s = UnknownScorer()
    s.calibration_, s.bandwidth_ = np.array([-1.0, 0.0, 1.0, 2.0]), 0.5
    got = s.calibrate([-50.0, -1.0, 0.5, 2.0, 50.0])
    want = [np.mean(norm.cdf((x - s.calibration_) / 0.5)) for x in (-50.0, -1.0, 0.5, 2.0)]
    assert np.allclose(got[:4], want) and got[0] == 0.0 and got[-1] == 1.0
    assert got[2] == pytest.approx(0.5)  # halfway between the middle two, by symmetry
    assert np.all(np.diff(s.calibrate(np.linspace(-3, 4, 50))) > 0)  # strictly increasing: no ties


def test_an_easy_small_project_does_not_standardise_by_a_tiny_spread():
    """12 images a probe separates perfectly: out-of-fold confidence barely varies, and a 94 %-confident answer
    must not look extreme because of that; the floors keep the spreads at absolute minimums."""
    from core.unknown import MIN_BANDWIDTH, MIN_CONFIDENCE_STD, MIN_DISTANCE_STD

    rng = np.random.default_rng(3)
    X = np.repeat(np.eye(4, dtype=np.float32)[:2], 6, axis=0) + 0.01 * rng.normal(size=(12, 4)).astype(np.float32)
    oof = np.tile([[0.97, 0.03]], (12, 1)) + 0.001 * rng.normal(size=(12, 2))
    s = UnknownScorer().fit(X, oof, np.arange(12) % 3)
    assert s.confidence_std_ == MIN_CONFIDENCE_STD
    # the standardised distance spreads the noise dimensions out, so its spread may be above its floor
    assert s.distance_std_ >= MIN_DISTANCE_STD and s.bandwidth_ >= MIN_BANDWIDTH
    exact = np.repeat(np.eye(4, dtype=np.float32)[:2], 6, axis=0)  # every image has copies in the other folds
    assert UnknownScorer().fit(exact, oof, np.arange(12) % 3).distance_std_ == MIN_DISTANCE_STD
    like = X[:1] + 0.01
    assert s.score(like, [[0.94, 0.06]])[0] < 0.95
    assert s.score(np.eye(4, dtype=np.float32)[3:], [[0.6, 0.4]])[0] > 0.99


def test_known_images_score_low_and_unknown_ones_high(fitted):
    X, y, centres, cv, s = fitted
    # images like the training set: spread over [0, 1], about 5 % at or above the 0.95 threshold
    rng = np.random.default_rng(7)
    new_known = np.concatenate([c + 0.6 * rng.normal(size=(100, X.shape[1])).astype(np.float32) for c in centres])
    new_known /= np.linalg.norm(new_known, axis=1, keepdims=True)
    known = s.score(new_known, cv.predict_proba(new_known))
    assert known.min() >= 0.0 and known.max() <= 1.0
    assert (known >= s.threshold_).mean() <= 0.08
    assert np.median(known) < 0.6
    # unknown: directions no training image points in; and halfway between two classes (low confidence)
    far = np.zeros((3, X.shape[1]), np.float32)
    far[:, -3:] = np.eye(3)
    between = (centres[0] + centres[1])[None] / np.linalg.norm(centres[0] + centres[1])
    for U in (far, between.astype(np.float32)):
        u = s.score(U, cv.predict_proba(U))
        assert np.all(u >= s.threshold_), u
    assert s.score(far, cv.predict_proba(far)).min() > 0.999
    # more unlike -> higher: a known centre scores lower than the midpoint, which scores lower than far away
    centre = centres[:1] / np.linalg.norm(centres[:1])
    assert s.raw_score(centre, cv.predict_proba(centre))[0] < s.raw_score(between, cv.predict_proba(between))[0]


def test_stored_in_the_probe_blob_and_absent_from_an_old_one(fitted):
    X, y, _, cv, s = fitted
    old = cv.best_estimator_.to_bytes()
    assert UnknownScorer.from_bytes(old) is None
    blob = with_scorer(old, s)
    probe = LinearProbe.from_bytes(blob)
    assert np.array_equal(probe.coef_, cv.best_estimator_.coef_)
    back = UnknownScorer.from_bytes(blob)
    assert back is not None and (back.threshold_, back.bandwidth_) == (s.threshold_, s.bandwidth_)
    assert back.references_.dtype == np.float32 and np.array_equal(back.references_, s.references_)
    P = cv.predict_proba(X)
    assert np.array_equal(back.score(X, P), s.score(X, P))


def test_a_scorer_stored_before_the_standardised_distance_scores_as_it_did(fitted):
    """Iterations trained before the change stored plain L2-normalised references and no centre, spreads or
    weights: they keep the plain cosine distance and the equal-weight mean."""
    import io

    from core.unknown import PREFIX

    X, y, _, cv, s = fitted
    arrays = s.to_arrays()
    for key in ("center", "spread", "weights"):
        arrays.pop(PREFIX + key)
    arrays[PREFIX + "references"] = X.astype(np.float16)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    old = UnknownScorer.from_bytes(buf.getvalue())
    assert old is not None and old.weights_ == (0.5, 0.5)
    P = cv.predict_proba(X[:7])
    refs = X.astype(np.float16).astype(np.float32)
    want = 0.5 * ((confidence_gap(P) - s.confidence_mean_) / s.confidence_std_
                  + (nearest_distance(X[:7], refs) - s.distance_mean_) / s.distance_std_)
    assert np.allclose(old.raw_score(X[:7], P), want, atol=1e-5)


def test_needs_two_folds():
    X, y, _ = _clusters(n_per=5)
    with pytest.raises(ValueError):
        UnknownScorer().fit(X, np.full((len(X), 3), 1 / 3), np.zeros(len(X), int))
