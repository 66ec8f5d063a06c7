import numpy as np
import pytest

from core.probe import LinearProbe, LinearProbeCV, sample_weights


def blobs(n_per=30, k=3, d=16, seed=0, sep=3.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * sep
    X = np.concatenate([centres[i] + rng.normal(size=(n_per, d)) for i in range(k)]).astype(np.float32)
    y = np.repeat(np.arange(k), n_per)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def test_fit_returns_self_and_sets_learned_attributes():
    X, y = blobs()
    probe = LinearProbe(C=10.0)
    assert probe.fit(X, y) is probe
    assert probe.coef_.shape == (17, 3)
    assert probe.C_ == 10.0 and probe.n_features_in_ == 16
    assert not hasattr(LinearProbe(), "coef_")


def test_multiclass_probabilities_sum_to_one_and_classify():
    X, y = blobs()
    P = LinearProbe(C=10.0).fit(X, y).predict_proba(X)
    assert np.allclose(P.sum(1), 1, atol=1e-5)
    assert (P.argmax(1) == y).mean() > 0.95


def test_regularisation_strength_changes_confidence():
    X, y = blobs()
    weak = LinearProbe(C=100.0).fit(X, y).predict_proba(X).max(1).mean()
    strong = LinearProbe(C=0.01).fit(X, y).predict_proba(X).max(1).mean()
    assert weak > strong + 0.2


def test_cv_chooses_C_from_grid():
    X, y = blobs()
    probe = LinearProbeCV(Cs=(0.01, 10.0)).fit(X, y)
    assert probe.C_ == 10.0  # separable data: the weakly regularised model has the lower held-out loss
    assert probe.best_estimator_.C_ == 10.0


def test_multilabel_columns_are_independent_sigmoids():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 8)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0], 1).astype(np.float32)
    probe = LinearProbe(multilabel=True, C=10.0).fit(X, Y)
    P = probe.predict_proba(X)
    assert P.shape == (200, 2)
    assert ((P > 0.5) == (Y > 0)).mean() > 0.95
    both = (Y.sum(1) == 2)
    assert (P[both].min(1) > 0.5).mean() > 0.9  # several tags can pass at once, unlike softmax


def test_balanced_weights_give_each_class_equal_total_weight():
    Y = np.zeros((10, 2), np.float32)
    Y[:8, 0] = 1
    Y[8:, 1] = 1
    w = sample_weights(Y, multilabel=False)
    assert np.isclose(w[:8].sum(), w[8:].sum())


def test_imbalanced_minority_class_is_still_found():
    X, y = blobs(n_per=40, k=2, sep=1.0, seed=4)
    keep = np.r_[np.arange(40), np.arange(40, 46)]
    X, y = X[keep], y[keep]
    pred = LinearProbe(C=10.0).fit(X, y).predict(X)
    assert (pred[y == 1] == 1).mean() >= 0.5


def test_serialisation_round_trip_gives_identical_probabilities():
    X, y = blobs()
    probe = LinearProbe(C=3.0).fit(X, y)
    again = LinearProbe.from_bytes(probe.to_bytes())
    assert np.array_equal(probe.predict_proba(X), again.predict_proba(X))
    assert again.C_ == 3.0


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("cls", [LinearProbe, LinearProbeCV])
def test_sklearn_clone_compatible(cls, multilabel):
    from sklearn.base import clone

    p = cls(multilabel=multilabel, tol=1e-6)
    assert clone(p).get_params() == p.get_params()
    assert p.get_params()["tol"] == 1e-6 and p.get_params()["multilabel"] is multilabel


@pytest.mark.parametrize("cls", [LinearProbe, LinearProbeCV])
def test_set_params_sets_known_names_and_rejects_unknown_ones(cls):
    p = cls()
    assert p.set_params(tol=1e-3) is p and p.tol == 1e-3
    with pytest.raises(ValueError, match="Cz"):
        p.set_params(tol=1e-4, Cz=3.0)
    assert p.tol == 1e-3 and not hasattr(p, "Cz")  # nothing set when one name is wrong
    assert sorted(p.get_params()) == sorted(__import__("inspect").signature(cls).parameters)


def test_coef_init_is_the_starting_point_and_fit_reaches_the_same_optimum():
    X, y = blobs()
    start = LinearProbe(C=0.1).fit(X, y).coef_
    # with no iteration allowed, the start comes back (through the rotation and back)
    assert np.allclose(LinearProbe(C=10.0, max_iter=0).fit(X, y, coef_init=start).coef_, start, atol=1e-5)
    cold = LinearProbe(C=10.0, tol=1e-9).fit(X, y).coef_
    warm = LinearProbe(C=10.0, tol=1e-9).fit(X, y, coef_init=start).coef_
    assert np.abs(cold - start).max() > 0.5  # a start far from the optimum
    P_cold, P_warm = (X @ W[:-1] + W[-1] for W in (cold, warm))
    assert np.abs(P_cold - P_warm).max() < 1e-2


def _balanced_log_loss(Y, P, multilabel):
    w = sample_weights(Y, multilabel)
    P = np.clip(P, 1e-7, 1 - 1e-7)
    cell = -(Y * np.log(P) + (1 - Y) * np.log(1 - P)) if multilabel else -np.log((P * Y).sum(1))
    return float((w * cell).sum() / w.sum())


@pytest.mark.parametrize("multilabel", [False, True])
def test_cv_chooses_the_C_with_the_lowest_kfold_log_loss(multilabel):
    X, y = blobs(n_per=40, d=32, sep=0.5, seed=5)
    Y = np.eye(3, dtype=np.float32)[y]
    if multilabel:
        Y = np.clip(Y + (np.random.default_rng(1).random(Y.shape) < 0.2), 0, 1).astype(np.float32)
    Cs = (0.1, 1.0, 10.0, 100.0)
    cv = LinearProbeCV(multilabel=multilabel, Cs=Cs, refit=False).fit(X, Y)
    losses = {}
    for C in Cs:  # plain per-fold fits, one C at a time
        oof = np.zeros_like(Y)
        for f in range(cv.folds_.max() + 1):
            train, test = cv.folds_ != f, cv.folds_ == f
            oof[test] = LinearProbe(multilabel=multilabel, C=C, tol=1e-9).fit(X[train], Y[train]).predict_proba(X[test])
        losses[C] = _balanced_log_loss(Y, oof, multilabel)
    assert min(Cs, key=losses.get) == cv.C_
    assert cv.C_ not in (Cs[0], Cs[-1])  # an inner optimum: the test tells min from either end of the grid
    # the path's scores (looser tolerance) rank the Cs as the plain fits do; the chosen one's is refined
    assert sorted(Cs, key=cv.scores_.get) == sorted(Cs, key=losses.get)
    assert abs(cv.scores_[cv.C_] - losses[cv.C_]) < 2e-3
    assert not hasattr(cv, "best_estimator_")  # refit=False


def test_cv_refits_on_every_image_at_the_chosen_C_and_reports_progress():
    X, y = blobs()
    seen = []
    folds = np.arange(len(y)) % 3
    cv = LinearProbeCV(Cs=(0.1, 1.0), progress=lambda *a: seen.append(a)).fit(X, y, folds=folds)
    assert np.array_equal(cv.folds_, folds) and cv.n_features_in_ == 16
    assert seen[-1] == ("fitting", 0, 0) and seen[-2] == ("evaluating", 3, 3)
    assert [d for stage, d, t in seen[:-1]] == sorted(d for stage, d, t in seen[:-1])
    alone = LinearProbe(C=cv.C_).fit(X, y)
    assert np.abs(cv.predict_proba(X) - alone.predict_proba(X)).max() < 1e-2
    assert np.array_equal(cv.predict(X), cv.best_estimator_.predict(X))


def _objective(Wb, X, Y, C, multilabel):
    """The documented objective in float64 (class-balanced weights, ||W||^2 / 2C, over the total weight)."""
    from scipy.special import log_expit, logsumexp

    X, Wb = X.astype(np.float64), Wb.astype(np.float64)
    w = sample_weights(Y, multilabel).astype(np.float64)
    Z = X @ Wb[:-1] + Wb[-1]
    if multilabel:
        data = (w * -(Y * log_expit(Z) + (1 - Y) * log_expit(-Z))).sum()
    else:
        data = (w * (logsumexp(Z, 1) - (Z * Y).sum(1))).sum()
    return (data + (Wb[:-1] ** 2).sum() / (2 * C)) / w.sum()


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("n,d", [(300, 24), (40, 64)])  # more images than dimensions, and fewer (the n-column trick)
def test_fit_reaches_the_optimum_of_the_documented_objective(multilabel, n, d):
    from scipy.optimize import minimize

    rng = np.random.default_rng(7)
    X = rng.normal(size=(n, d)).astype(np.float32) + 0.3
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    k = 3
    if multilabel:
        Y = (rng.random((n, k)) < 0.4).astype(np.float32)
        Y[:k, :] = np.eye(k)
    else:
        Y = np.eye(k, dtype=np.float32)[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.2)]
    C = 10.0
    ours = _objective(LinearProbe(multilabel=multilabel, C=C).fit(X, Y).coef_, X, Y, C, multilabel)

    def f(theta):
        return _objective(theta.reshape(d + 1, k), X, Y, C, multilabel)

    best = minimize(f, np.zeros((d + 1) * k), method="L-BFGS-B",
                    options={"maxiter": 20000, "ftol": 1e-14, "gtol": 1e-10}).fun
    assert ours - best < 1e-4
