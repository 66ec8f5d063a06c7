"""The probe as scikit-learn-style estimators: `LinearProbe` at a given C, and `LinearProbeCV`, which
selects C by k-fold cross-validation and fits the final probe (as LogisticRegressionCV beside
LogisticRegression). `fit` returns self; learned attributes end in `_`.

How LinearProbeCV selects C: every fold model is fitted for every C in the grid, only on its training rows
(held-out rows carry zero weight), walking the path from strong to weak regularisation with warm starts.
The path is solved to a looser tolerance (PATH_TOL, enough to rank the Cs: their log-losses differ by far
more than that); the C with the lowest out-of-fold log-loss wins (ties go to the larger C), and its fold
models are then taken on to the final tolerance from where the path left them: the out-of-fold
probabilities `oof_` are theirs. `scores_` holds the path's log-loss for every C, the selected one's
recomputed after that refinement. With a five-value grid the selection bias is small next to the
fold-to-fold spread.

Speed: the folds share one label-free rotation of the features (a `Design`) and advance in lock-step, so
each iteration's matrix products are one wide product for all folds. The final model is fitted on the same
Design, handed to `LinearProbe.fit_design`, from the mean of the fold models at the selected C (it is not
evaluated out of fold, so that start leaks nothing).
"""
from __future__ import annotations

import inspect
import io
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from .design import Design, Rotated
from .folds import MAX_FOLDS, kfold_assignments
from .solver import DEFAULT_TOL, Rows, Solver, StageResult, Task, sample_weights

F32: TypeAlias = npt.NDArray[np.float32]
# progress(stage, done, total): ("evaluating", folds done, folds) during the k-fold path, then ("fitting", 0, 0)
Progress: TypeAlias = Callable[[str, int, int], None]

DEFAULT_CS = (1.0, 3.0, 10.0, 30.0, 100.0)
PATH_TOL = 1e-4  # the C path's tolerance; the selected C is refined to the estimator's `tol`


class _Params:
    """get_params / set_params over the constructor's arguments, as scikit-learn's `clone` expects."""

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Any:
        valid = self._param_names()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ValueError(f"invalid parameter(s) {', '.join(unknown)} for {type(self).__name__}; "
                             f"valid parameters are: {', '.join(valid)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


def indicator(Y: npt.ArrayLike) -> F32:
    """(n, k) 0/1 float32 indicator matrix from one, or from (n,) class indices."""
    Y = np.asarray(Y)
    if Y.ndim == 1:
        k = int(Y.max()) + 1 if len(Y) else 1
        out = np.zeros((len(Y), k), np.float32)
        out[np.arange(len(Y)), Y.astype(int)] = 1
        return out
    return Y.astype(np.float32)


def predict_proba(coef: F32, X: npt.ArrayLike, multilabel: bool) -> F32:
    """Probabilities of (d + 1, k) weights (bias last) on features X: softmax, or a sigmoid per tag."""
    Z = np.asarray(X, np.float32) @ coef[:-1] + coef[-1]
    from scipy.special import expit, log_softmax  # SciPy loads on first use, not when a CLI command starts

    P: F32 = expit(Z) if multilabel else np.exp(log_softmax(Z, axis=1))
    return P


class LinearProbe(_Params):
    """Linear classifier on embeddings at inverse regularisation strength `C` (see core.probe.solver for
    the objective). Learned: `coef_` (d + 1, k) weights on the features with the bias last, `C_`,
    `n_features_in_`."""

    coef_: F32
    C_: float
    n_features_in_: int

    def __init__(self, multilabel: bool = False, C: float = 1.0, tol: float = DEFAULT_TOL, max_iter: int = 500):
        self.multilabel = multilabel
        self.C = C
        self.tol = tol
        self.max_iter = max_iter

    def set_params(self, **params: Any) -> LinearProbe:
        super().set_params(**params)
        return self

    def fit(self, X: npt.ArrayLike, Y: npt.ArrayLike, coef_init: npt.ArrayLike | None = None) -> LinearProbe:
        """X: (n, d) embeddings. Y: (n, k) 0/1 indicator matrix, or (n,) class indices (multiclass).
        coef_init: (d + 1, k) weights to start from (a warm start: the optimum reached is the same)."""
        design = Design(X)
        return self.fit_design(design, Y, None if coef_init is None else design.from_original(coef_init))

    def fit_design(self, design: Design, Y: npt.ArrayLike, start: Rotated | None = None) -> LinearProbe:
        """`fit` on the rows of a Design already built from X, starting from `start` in its coordinates
        (LinearProbeCV fits its final probe this way, on the rotation its folds used)."""
        Y = indicator(Y)
        solver = Solver(design.Z, Y, self.multilabel, design.var, tol=self.tol, max_iter=self.max_iter)
        self.C_ = float(self.C)
        task = solver.task(None, [self.C_], *(start or (None, None)))
        solver.run([task])
        W, b, _ = task.results[0]
        self.coef_ = design.to_original(W, b)
        self.n_features_in_ = design.d
        return self

    def predict_proba(self, X: npt.ArrayLike) -> F32:
        return predict_proba(self.coef_, X, self.multilabel)

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Tag index per image (multiclass), or a 0/1 matrix of the tags at probability ≥ 0.5 (multilabel)."""
        P = self.predict_proba(X)
        return (P >= 0.5).astype(np.intp) if self.multilabel else P.argmax(1)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, coef=self.coef_, C=np.float64(self.C_), multilabel=np.bool_(self.multilabel))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LinearProbe:
        z = np.load(io.BytesIO(data))
        probe = cls(multilabel=bool(z["multilabel"]), C=float(z["C"]))
        probe.coef_ = z["coef"].astype(np.float32)
        probe.C_ = float(z["C"])
        probe.n_features_in_ = probe.coef_.shape[0] - 1
        return probe


class LinearProbeCV(_Params):
    """LinearProbe with C chosen from `Cs` by stratified k-fold cross-validation (see the module docstring).

    Learned: `C_`, `scores_` (k-fold log-loss per C), `oof_` (n, k) out-of-fold probabilities at `C_`,
    `folds_` (fold of each image), `n_features_in_`, and with `refit`, `best_estimator_`: the LinearProbe
    at `C_` fitted on every image (predict / predict_proba use it)."""

    C_: float
    scores_: dict[float, float]
    oof_: F32
    folds_: npt.NDArray[np.int32]
    n_features_in_: int
    best_estimator_: LinearProbe

    def __init__(self, multilabel: bool = False, Cs: Sequence[float] = DEFAULT_CS, max_folds: int = MAX_FOLDS,
                 seed: int = 0, tol: float = DEFAULT_TOL, max_iter: int = 500, refit: bool = True,
                 progress: Progress | None = None):
        self.multilabel = multilabel
        self.Cs = Cs
        self.max_folds = max_folds
        self.seed = seed
        self.tol = tol
        self.max_iter = max_iter
        self.refit = refit
        self.progress = progress

    def set_params(self, **params: Any) -> LinearProbeCV:
        super().set_params(**params)
        return self

    def fit(self, X: npt.ArrayLike, Y: npt.ArrayLike, folds: npt.ArrayLike | None = None) -> LinearProbeCV:
        """X: (n, d) embeddings. Y: (n, k) 0/1 indicator matrix, or (n,) class indices (multiclass).
        folds: the fold of each image (default: stratified assignment with `max_folds` and `seed`)."""
        Y = indicator(Y)
        multilabel, progress = self.multilabel, self.progress
        fold_of = (kfold_assignments(Y, multilabel, self.max_folds, self.seed) if folds is None
                   else np.asarray(folds, np.int32))
        Cs = sorted(float(c) for c in self.Cs)
        design = Design(X)
        nfold = int(fold_of.max()) + 1
        solver = Solver(design.Z, Y, multilabel, design.var, tol=PATH_TOL, max_iter=self.max_iter)
        # every fold walks the C path from strong to weak regularisation, each fit warm-started from the
        # previous one; the folds advance in lock-step so that their matrix products are shared
        trains = [np.flatnonzero(fold_of != f) for f in range(nfold)]
        tests = [np.flatnonzero(fold_of == f) for f in range(nfold)]
        tasks = [solver.task(trains[f], Cs, keep=tests[f]) for f in range(nfold)]
        finished = [0]
        total_steps = nfold * (len(Cs) + 1)

        def tick() -> None:
            finished[0] += 1
            if progress and finished[0] % (len(Cs) + 1) == 0:
                progress("evaluating", min(nfold, finished[0] * nfold // total_steps), nfold)

        solver.run(tasks, progress=tick if progress else None)
        oof = {C: _oof(Y.shape, tests, [t.results[i] for t in tasks], multilabel) for i, C in enumerate(Cs)}
        scores = {C: _log_loss(Y, oof[C], multilabel) for C in Cs}
        best = min(Cs, key=lambda C: (scores[C], -C))
        final = _refine(solver, tasks, trains, Cs.index(best), self.tol, tick if progress else None)
        oof[best] = _oof(Y.shape, tests, final, multilabel)
        scores[best] = _log_loss(Y, oof[best], multilabel)
        if progress:
            progress("evaluating", nfold, nfold)
        self.C_, self.scores_, self.oof_, self.folds_ = best, scores, oof[best], fold_of
        self.n_features_in_ = design.d
        if self.refit:
            if progress:
                progress("fitting", 0, 0)
            start = Rotated(_mean([r.W for r in final]), _mean([r.b for r in final]))
            self.best_estimator_ = LinearProbe(multilabel, C=best, tol=self.tol, max_iter=self.max_iter).fit_design(
                design, Y, start)
        return self

    def predict_proba(self, X: npt.ArrayLike) -> F32:
        return self.best_estimator_.predict_proba(X)

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.intp]:
        return self.best_estimator_.predict(X)


def _refine(solver: Solver, tasks: list[Task], trains: list[Rows], i: int, tol: float,
            progress: Callable[[], None] | None) -> list[StageResult]:
    """The fold models at the path's i-th C, taken on to `tol` from where the path left them."""
    if tasks[0].Cs[i] == tasks[0].Cs[-1]:  # the last C: continue the same runs (state and curvature pairs intact)
        solver.refine_last(tasks, tol, progress=progress)
        return [t.results[-1] for t in tasks]
    again = [solver.task(rows, [t.Cs[i]], t.results[i].W, t.results[i].b, keep=t.keep)
             for rows, t in zip(trains, tasks, strict=True)]
    for t in again:
        t.tol = tol
    solver.run(again, progress=progress)
    return [t.results[-1] for t in again]


def _mean(arrays: list[F32]) -> F32:
    """Element-wise mean, summed in order."""
    total = arrays[0].copy()
    for a in arrays[1:]:
        total += a
    mean: F32 = total / np.float32(len(arrays))
    return mean


def _oof(shape: tuple[int, ...], tests: list[Rows], results: list[StageResult], multilabel: bool) -> F32:
    """Out-of-fold probabilities: each fold's held-out logits, through the link."""
    out = np.zeros(shape, np.float32)
    for rows, r in zip(tests, results, strict=True):
        assert r.logits is not None
        out[rows] = _proba(r.logits, multilabel)
    return out


def _proba(logits: F32, multilabel: bool) -> F32:
    from scipy.special import expit, softmax

    P: F32 = (expit(logits) if multilabel else softmax(logits, axis=1)).astype(np.float32)
    return P


def _log_loss(Y: F32, P: F32, multilabel: bool) -> float:
    """Class-balanced mean log-loss (the weights the probe is trained with)."""
    W8 = sample_weights(Y, multilabel)
    P = np.clip(P, 1e-7, 1 - 1e-7)
    if multilabel:
        return float((W8 * -(Y * np.log(P) + (1 - Y) * np.log(1 - P))).sum() / W8.sum())
    return float((W8 * -np.log((P * Y).sum(1))).sum() / W8.sum())
