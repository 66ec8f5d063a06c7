import numpy as np

from core.evaluation import Evaluation, performance
from core.probe import LinearProbe, LinearProbeCV, kfold_assignments, n_folds


def _ev(Y, P, folds=None, multilabel=False, types=None):
    k = Y.shape[1]
    return Evaluation([f"i{n}" for n in range(len(Y))], Y.astype(np.float32), P.astype(np.float32),
                      np.zeros(len(Y), np.int32) if folds is None else folds, [f"t{i}" for i in range(k)],
                      [f"tag{i}" for i in range(k)], types or ["Regular"] * k, multilabel, 1.0)


def test_stratified_folds_put_every_class_in_every_fold():
    y = np.repeat(np.arange(3), [10, 7, 5])
    Y = np.eye(3)[y]
    folds = kfold_assignments(Y, multilabel=False)
    assert folds.max() + 1 == 5
    for f in range(5):
        assert set(y[folds == f]) == {0, 1, 2}


def test_fewer_folds_when_a_tag_is_small():
    Y = np.eye(2)[np.repeat([0, 1], [20, 3])]
    assert n_folds(Y, multilabel=False) == 3


def test_multilabel_iterative_stratification_spreads_each_label():
    rng = np.random.default_rng(0)
    Y = (rng.random((60, 3)) < 0.3).astype(np.float32)
    folds = kfold_assignments(Y, multilabel=True)
    for f in range(folds.max() + 1):
        assert (Y[folds == f].sum(0) > 0).all()


def test_precision_recall_by_hand():
    # tag0: truth [1,1,0,0], probs [.9,.4,.6,.1] -> at .5: tp=1, predicted=2, positives=2
    Y = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    P = np.array([[.9, .1], [.4, .6], [.6, .4], [.1, .9]])
    perf = performance(_ev(Y, P), 0.5)
    t0 = perf["perTagPerformance"][0]
    assert t0["precision"] == 0.5 and t0["recall"] == 0.5 and t0["imageCount"] == 2
    # overall micro: tp = 1 (row0) + 1 (row3) = 2, predicted = 4, positives = 4
    assert perf["precision"] == 0.5 and perf["recall"] == 0.5
    assert perf["accuracy"] == 0.5
    assert np.array(perf["confusionMatrix"]["matrix"]).sum() == 4


def test_threshold_recompute_trades_precision_for_recall():
    rng = np.random.default_rng(1)
    Y = np.eye(4)[rng.integers(0, 4, 200)]
    P = np.clip(Y * 0.5 + rng.random((200, 4)) * 0.6, 0, 1)
    low, high = performance(_ev(Y, P), 0.2), performance(_ev(Y, P), 0.9)
    assert low["recall"] > high["recall"]
    assert high["precision"] > low["precision"]
    assert low["averagePrecision"] == high["averagePrecision"]  # AP does not depend on the threshold


def test_negative_tag_is_left_out_of_overall_numbers():
    Y = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    P = np.array([[.9, .1], [.8, .2], [.9, .1], [.8, .2]])  # every negative image wrongly called tag0
    perf = performance(_ev(Y, P, types=["Regular", "Negative"]), 0.5)
    assert perf["recall"] == 1.0 and perf["precision"] == 0.5
    assert perf["perTagPerformance"][1]["recall"] == 0.0


def test_std_deviation_across_folds():
    Y = np.array([[1, 0]] * 4 + [[0, 1]] * 4)
    P = np.array([[.9, .1]] * 2 + [[.1, .9]] * 2 + [[.1, .9]] * 4)
    folds = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    perf = performance(_ev(Y, P, folds), 0.5)
    assert perf["recallStdDeviation"] > 0


def test_serialised_evaluation_recomputes_identically():
    rng = np.random.default_rng(2)
    Y = np.eye(3)[rng.integers(0, 3, 30)]
    ev = _ev(Y, rng.random((30, 3)))
    again = Evaluation.from_bytes(ev.to_bytes())
    assert performance(again, 0.3) == performance(ev, 0.3)


def test_cross_validation_oof_never_sees_its_own_label():
    # labels are pure noise: out-of-fold accuracy must sit near chance, while training accuracy would not
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 64)).astype(np.float32)
    y = rng.integers(0, 2, 120)
    res = LinearProbeCV(multilabel=False, refit=False).fit(X, np.eye(2)[y])
    acc = (res.oof_.argmax(1) == y).mean()
    assert 0.3 < acc < 0.7
    assert set(res.scores_) == {1.0, 3.0, 10.0, 30.0, 100.0}


def test_average_precision_matches_scikit_learn_with_ties():
    from sklearn.metrics import average_precision_score

    from core.evaluation import average_precision

    rng = np.random.default_rng(4)
    for n in (5, 50, 500):
        y = rng.random(n) < 0.3
        y[0] = True
        for score in (rng.random(n), np.round(rng.random(n), 1), np.zeros(n)):
            assert np.isclose(average_precision(y, score), average_precision_score(y, score))


def test_multilabel_cross_validation_oof_never_sees_its_own_labels():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(150, 64)).astype(np.float32)
    Y = (rng.random((150, 3)) < 0.5).astype(np.float32)  # pure noise
    res = LinearProbeCV(multilabel=True, refit=False).fit(X, Y)
    agreement = ((res.oof_ >= 0.5) == (Y > 0)).mean()
    assert 0.35 < agreement < 0.65
    assert res.oof_.shape == Y.shape and set(res.scores_) == {1.0, 3.0, 10.0, 30.0, 100.0}


def test_selected_C_out_of_fold_predictions_match_plain_per_fold_fits():
    # the lock-step, warm-started, rotated solver gives each fold the model fitted on that fold's rows alone
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 90)
    X = (rng.normal(size=(90, 12)) + np.eye(3, 12)[y] * 2).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[y]
    res = LinearProbeCV(multilabel=False).fit(X, Y)
    assert res.folds_.max() + 1 == 5
    for f in range(res.folds_.max() + 1):
        train, test = res.folds_ != f, res.folds_ == f
        alone = LinearProbe(C=res.C_, tol=1e-9).fit(X[train], Y[train]).predict_proba(X[test])
        assert np.abs(alone - res.oof_[test]).max() < 0.02
        # ... and not the final model, which has seen the held-out rows
        assert np.abs(res.predict_proba(X[test]) - res.oof_[test]).max() > 0.02
