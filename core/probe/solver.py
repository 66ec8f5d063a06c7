"""The probe's optimiser: L-BFGS for the class-balanced, L2-regularised logistic objective.

The objective is scikit-learn's (class-balanced sample weights, L2 penalty ||W||² / 2C, averaged by the
total sample weight; the bias is not penalised): softmax for Multiclass, one sigmoid per tag for
Multilabel. It is minimised in the coordinates of a `Design` (core.probe.design), for speed:

* L-BFGS runs in coordinates scaled by a diagonal estimate of the Hessian in that basis (feature variance
  times the softmax curvature, plus the penalty), so weak regularisation (large C) costs about as much as
  strong; along a path of Cs the curvature pairs are carried over (exactly re-expressed for the new C).
* The model is linear: a line search along a direction p needs X p once, and trial steps cost only
  element-wise work on the (n, k) logits. One iteration is two matrix products, X p and Xᵀ R, and the
  k-fold models run in lock-step so that those are one wide product for all folds.
* float32 numpy throughout (BLAS on every core for the large products; no torch, so that a server that
  only runs ONNX models never loads it).
* Convergence: stop when half the squared scaled gradient (an estimate of the distance to the optimum in
  units of the mean log-loss) is below `DEFAULT_TOL`. Measured against a float64 solution this leaves a
  smaller objective gap than scikit-learn's lbfgs with its default tolerance.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

F32: TypeAlias = npt.NDArray[np.float32]
Rows: TypeAlias = npt.NDArray[np.intp]
Tick: TypeAlias = Callable[[], None]  # called once per finished stage (one C of one task)
_Map: TypeAlias = Callable[..., Iterable[Any]]  # map, or a thread pool's map
_Pair: TypeAlias = tuple[F32, F32, float]  # an L-BFGS curvature pair (s, y, 1 / sᵀy)
# a line search's outcome: step length, objective, data loss, residuals and logits at the new point
_Searched: TypeAlias = tuple[float, float, float, F32, F32]

# Stop when the estimated distance to the optimum (half the squared preconditioned gradient, in units of
# the mean log-loss) falls below this. 1e-5 is far below the C-to-C differences the selection looks at.
DEFAULT_TOL = 1e-5


def sample_weights(Y: npt.NDArray[np.floating[Any]], multilabel: bool) -> F32:
    """Class-balanced weights: per row (multiclass) or per cell (multilabel), as scikit-learn's 'balanced'."""
    n, k = Y.shape
    if not multilabel:
        counts = Y.sum(0)
        per_class = n / (k * np.maximum(counts, 1))
        per_row: F32 = (Y @ per_class).astype(np.float32)
        return per_row
    pos = Y.sum(0)
    neg = n - pos
    wpos = n / (2 * np.maximum(pos, 1))
    wneg = n / (2 * np.maximum(neg, 1))
    per_cell: F32 = np.where(Y > 0, wpos, wneg).astype(np.float32)
    return per_cell


class StageResult(NamedTuple):
    """A task's model at one C of its path, and its logits (m, k) on the task's kept rows."""

    W: F32
    b: F32
    logits: F32 | None


class Task:
    """One L-BFGS run over a path of Cs: the rows it trains on carry weight, held-out rows weigh 0.

    Made by `Solver.task`; its `results` hold one StageResult per C once the solver has run it."""

    def __init__(self, w: F32, sw: float, Cs: Iterable[float], W0: F32 | None = None, b0: F32 | None = None,
                 keep: Rows | None = None):
        self.w = w  # (n,) or, multilabel, (k, n) weights normalised to sum 1, zero on held-out rows
        self.sw = sw  # their sum before normalising: the penalty is relative to it
        self.Cs = list(Cs)
        self.keep = keep  # rows whose logits are recorded at each C (the held-out fold)
        self.W0, self.b0 = W0, b0
        self.stage = -1
        self.results: list[StageResult] = []  # per C
        self.iterations = 0
        self.done = False
        self.tol: float | None = None  # the solver's unless set
        # the solver's state: the point (rotated W, b; scaled x), logits Zl (k, n), objective f and its
        # data term, residuals R (k, n) and Zᵀ R, gradient g, the C's penalty lam and scaling s, sb, and
        # the curvature pairs S
        self.W, self.b, self.x, self.g = _empty(), _empty(), _empty(), _empty()
        self.Zl, self.R, self.ZR, self.s = _empty(), _empty(), _empty(), _empty()
        self.f = self.f_data = self.lam = 0.0
        self.sb = np.float32(1.0)
        self.S: list[_Pair] = []
        self.stage_iter = 0
        self.pending: tuple[float, F32, float, float, F32, F32, F32] | None = None  # a step to apply


def _empty() -> F32:
    return np.zeros(0, np.float32)


class Solver:
    """L-BFGS on the rotated, diagonally preconditioned problem, for several tasks in lock-step.

    Tasks (the k-fold models, each walking its own C path) share the Design's rows, so their two matrix
    products per iteration run as one wide product (BLAS, all cores), much faster than several thin ones.
    Everything else is element-wise or vector work per task, in numpy (single-threaded operations: on a
    busy machine small multi-threaded ones spend more time waiting for each other than computing), with
    the tasks spread over a thread per core.
    """

    def __init__(self, Z: F32, Y: npt.ArrayLike, multilabel: bool, var: npt.ArrayLike, tol: float = DEFAULT_TOL,
                 max_iter: int = 500, history: int = 20):
        self.Z = Z  # (n, r)
        self.Y = np.ascontiguousarray(Y, np.float32)
        self.Yt = np.ascontiguousarray(self.Y.T)  # logits and residuals are class-major, (k, n): reductions
        self.multilabel = multilabel             # over the classes then run along contiguous rows
        self.var = np.asarray(var, np.float32)
        self.tol, self.max_iter, self.history = tol, max_iter, history
        n, k = self.Y.shape
        binary = bool(((self.Y == 0) | (self.Y == 1)).all())
        one_hot = not multilabel and n > 0 and binary and bool((self.Y.sum(1) == 1).all())
        self.labels: Rows | None = self.Y.argmax(1) if one_hot else None
        self.n, self.k, self.r = n, k, int(Z.shape[1])
        # curvature of the data loss per logit at the start: about 1/k for the softmax; 1/4 per sigmoid
        # cell, with the loss averaged over the k columns
        self.curv = (0.25 / k) if multilabel else (1.0 / k)

    def task(self, rows: npt.ArrayLike | None, Cs: Sequence[float], W0: F32 | None = None, b0: F32 | None = None,
             keep: Rows | None = None) -> Task:
        """A task training on `rows` (all when None) with class-balanced weights computed on those rows;
        its logits on the rows `keep` are recorded at each C."""
        n, k = self.Y.shape
        idx = np.arange(n) if rows is None else np.asarray(rows)
        w_rows = sample_weights(self.Y[idx], self.multilabel)
        w = np.zeros((n,) if not self.multilabel else (n, k), np.float32)
        w[idx] = w_rows
        sw = float(w_rows.sum(dtype=np.float64))
        w = np.ascontiguousarray(w.T) / np.float32(sw)  # (n,) or (k, n)
        return Task(w, sw, Cs, W0, b0, keep)

    # ---- products with the design
    def _times(self, M: F32, bias: F32) -> F32:
        """(Z @ M + bias)ᵀ: (m, n) for M (r, m)."""
        out = np.empty((M.shape[1], self.n), np.float32)
        if self.r:
            np.matmul(M.T, self.Z.T, out=out)
            out += bias[:, None]
        else:
            out[:] = bias[:, None]
        return out

    def _times_t(self, Rt: F32) -> F32:
        """Zᵀ R for Rt = Rᵀ (m, n): (r, m)."""
        return (Rt @ self.Z).T if self.r else np.zeros((0, Rt.shape[0]), np.float32)

    # ---- the loss as a function of the logits
    def _loss_grad(self, t: Task, Zl: F32) -> tuple[float, F32]:
        """Weighted mean data loss at class-major logits Zl (k, n) and its gradient dL/dZl (weights in)."""
        Yt = self.Yt
        if self.multilabel:
            loss = float(np.sum(t.w * (np.logaddexp(np.float32(0), Zl) - Yt * Zl), dtype=np.float64))
            from scipy.special import expit  # loaded on first use, not at import

            R: F32 = expit(Zl)
            R -= Yt
            R *= t.w
            return loss, R
        m = Zl.max(0)
        E = np.subtract(Zl, m)
        np.exp(E, out=E)
        ssum = E.sum(0)
        lse = m + np.log(ssum)
        if self.labels is not None:  # one tag per image: pick the true logit instead of a product with Y
            rows = np.arange(len(lse))
            loss = float(np.dot(t.w.astype(np.float64), lse - Zl[self.labels, rows]))
            E /= ssum
            E[self.labels, rows] -= 1.0
        else:
            loss = float(np.dot(t.w.astype(np.float64), lse - np.einsum("ij,ij->j", Zl, Yt)))
            E /= ssum
            E -= Yt
        E *= t.w
        return loss, E

    def _begin(self, tasks: list[Task]) -> None:
        """Start the tasks' first stages: logits and gradients at their initial points (shared products)."""
        r, k = self.r, self.k
        warm = []
        for t in tasks:
            t.W = np.zeros((r, k), np.float32) if t.W0 is None else np.array(t.W0, np.float32)
            t.b = np.zeros(k, np.float32) if t.b0 is None else np.array(t.b0, np.float32)
            if t.W0 is None:
                t.Zl = np.repeat(t.b[:, None], self.n, 1)
            else:
                warm.append(t)
        if warm:
            Zl_all = self._times(np.concatenate([t.W for t in warm], 1), np.concatenate([t.b for t in warm]))
            for j, t in enumerate(warm):
                t.Zl = Zl_all[j * k:(j + 1) * k]
        for t in tasks:
            t.f_data, t.R = self._loss_grad(t, t.Zl)
        ZR_all = self._times_t(np.concatenate([t.R for t in tasks], 0))
        for j, t in enumerate(tasks):
            t.ZR = ZR_all[:, j * k:(j + 1) * k]
            self._next_stage(t)

    def _next_stage(self, t: Task) -> None:
        t.stage += 1
        if t.stage >= len(t.Cs):
            t.done = True
            return
        C = t.Cs[t.stage]
        old_s, old_lam = t.s, t.lam  # the previous C's, when this is not the first stage
        t.lam = 1.0 / (C * t.sw)
        t.s = (1.0 / np.sqrt(self.curv * self.var + t.lam)).astype(np.float32)[:, None]  # W = s * B
        t.sb = np.float32(1.0 / math.sqrt(self.curv))  # b = sb * beta
        t.x = np.concatenate([(t.W / t.s).ravel(), t.b / t.sb]).astype(np.float32)
        t.f = t.f_data + 0.5 * t.lam * float(np.vdot(t.W, t.W))
        t.g = self._grad(t, t.W, t.ZR, t.R)
        # keep the curvature pairs: the data term's are unchanged, the penalty's change is known exactly
        S = []
        if t.stage > 0:
            rk = self.r * self.k
            for sv, yv, _ in t.S:
                dW = sv[:rk].reshape(self.r, self.k) * old_s
                yW = yv[:rk].reshape(self.r, self.k) / old_s + np.float32(t.lam - old_lam) * dW
                sv2 = np.concatenate([(dW / t.s).ravel(), sv[rk:]])
                yv2 = np.concatenate([(yW * t.s).ravel(), yv[rk:]])
                sy = float(np.dot(sv2, yv2))
                if sy > 1e-16:
                    S.append((sv2, yv2, 1.0 / sy))
        t.S = S
        t.stage_iter = 0

    def _grad(self, t: Task, W: F32, ZR: F32, R: F32) -> F32:
        gW = (ZR + np.float32(t.lam) * W) * t.s
        return np.concatenate([gW.ravel(), t.sb * R.sum(1)]).astype(np.float32)

    def refine_last(self, tasks: list[Task], tol: float, progress: Tick | None = None) -> None:
        """Continue every task's last C to a tighter tolerance, from where it stopped (state and curvature
        pairs intact); its recorded result for that C is replaced."""
        for t in tasks:
            t.results.pop()
            t.done, t.stage, t.stage_iter, t.tol = False, len(t.Cs) - 1, 0, tol
        self.run(tasks, progress, resume=True)

    def _finish_stage(self, t: Task) -> None:
        t.results.append(StageResult(t.W.copy(), t.b.copy(), None if t.keep is None else t.Zl[:, t.keep].T))
        self._next_stage(t)

    def _direction(self, t: Task) -> tuple[F32, float] | None:
        """L-BFGS two-loop recursion in the scaled coordinates; None when the stage has converged."""
        g = t.g
        gg = float(np.dot(g, g))
        if 0.5 * gg <= (t.tol or self.tol) or t.stage_iter >= self.max_iter:
            return None
        q = g.copy()
        alphas: list[float] = []
        for sv, yv, rho in reversed(t.S):
            a = rho * float(np.dot(sv, q))
            q -= np.float32(a) * yv
            alphas.append(a)
        if t.S:
            _, yv, rho = t.S[-1]
            q *= np.float32(1.0 / (rho * float(np.dot(yv, yv))))
        for (sv, yv, rho), a in zip(t.S, reversed(alphas), strict=True):
            c = rho * float(np.dot(yv, q))
            q += np.float32(a - c) * sv
        q = -q
        d0 = float(np.dot(g, q))
        if d0 >= 0:  # not a descent direction: restart from the (scaled) steepest descent
            t.S.clear()
            q, d0 = -g, -gg
        return q, d0

    def _split(self, t: Task, v: F32) -> tuple[F32, F32]:
        rk = self.r * self.k
        return v[:rk].reshape(self.r, self.k) * t.s, v[rk:] * t.sb  # (W, b) of a scaled vector

    def run(self, tasks: list[Task], progress: Tick | None = None, resume: bool = False) -> None:
        """Advance every task through all of its Cs. The per-task work between the two shared products
        (directions, line searches, updates: numpy releases the GIL) runs on a thread per core."""
        workers = min(len(tasks), os.cpu_count() or 1)
        if workers <= 1:
            self._run(tasks, progress, map, resume)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="probe") as pool:
            self._run(tasks, progress, pool.map, resume)

    def _run(self, tasks: list[Task], progress: Tick | None, pmap: _Map, resume: bool) -> None:
        k = self.k
        if not resume:
            self._begin(tasks)

        def advance(t: Task) -> tuple[tuple[F32, float] | None, int]:
            """Apply the task's pending step, then find its next direction (None: all Cs done)."""
            if t.pending is not None:
                self._apply(t, *t.pending)
                t.pending = None
            finished = 0
            while not t.done:
                d = self._direction(t)
                if d is not None:
                    return d, finished
                self._finish_stage(t)
                finished += 1
            return None, finished

        if not resume:
            for t in tasks:
                t.pending = None
        while True:
            steps: list[tuple[Task, F32, float]] = []
            for t, (d, finished) in zip(tasks, list(pmap(advance, tasks)), strict=True):
                if progress:
                    for _ in range(finished):
                        progress()
                if d is not None:
                    steps.append((t, *d))
            if not steps:
                return
            # one wide product for every task's direction in logit space
            parts = [self._split(t, p) for t, p, _ in steps]
            U_all = self._times(np.concatenate([PW for PW, _ in parts], 1), np.concatenate([pb for _, pb in parts]))

            def search(j: int, steps: list[Any] = steps, parts: list[Any] = parts,
                       U_all: F32 = U_all) -> _Searched:  # bound now: the closure runs within this iteration
                t, p, d0 = steps[j]
                PW = parts[j][0]
                U = U_all[j * k:(j + 1) * k]
                pen0 = 0.5 * t.lam * float(np.vdot(t.W, t.W))
                wp, pp = float(np.vdot(t.W, PW)), float(np.vdot(PW, PW))
                return self._line_search(t, U, d0, pen0, wp, pp)

            moved = []
            searched = list(pmap(search, range(len(steps))))
            for (t, p, _), (a, f_new, fd_new, R_new, Zl_new) in zip(steps, searched, strict=True):
                t.iterations += 1
                t.stage_iter += 1
                if a == 0.0:  # no progress possible along this direction: the stage is done
                    t.stage_iter = self.max_iter
                    continue
                moved.append((t, a, p, f_new, fd_new, R_new, Zl_new))
            if moved:
                ZR_all = self._times_t(np.concatenate([m[5] for m in moved], 0))
                for j, (t, a, p, f_new, fd_new, R_new, Zl_new) in enumerate(moved):
                    t.pending = (a, p, f_new, fd_new, R_new, Zl_new, ZR_all[:, j * k:(j + 1) * k])

    def _apply(self, t: Task, a: float, p: F32, f_new: float, fd_new: float, R_new: F32, Zl_new: F32,
               ZR: F32) -> None:
        """Move the task to the accepted point and update its curvature pairs."""
        step = np.float32(a) * p
        x_new = t.x + step
        W_new, b_new = self._split(t, x_new)
        g_new = self._grad(t, W_new, ZR, R_new)
        yv = g_new - t.g
        sy = float(np.dot(step, yv))
        if sy > 1e-16:
            t.S.append((step, yv, 1.0 / sy))
            if len(t.S) > self.history:
                t.S.pop(0)
        decrease = t.f - f_new
        t.x, t.W, t.b, t.g = x_new, W_new, b_new, g_new
        t.Zl, t.f, t.f_data, t.R, t.ZR = Zl_new, f_new, fd_new, R_new, ZR
        if decrease <= 1e-13 * max(1.0, abs(t.f)):
            t.stage_iter = self.max_iter  # stalled at float32 resolution

    def _line_search(self, t: Task, U: F32, d0: float, pen0: float, wp: float, pp: float, c1: float = 1e-4,
                     c2: float = 0.9, max_steps: int = 40) -> _Searched:
        """A strong-Wolfe step along the direction, whose image in logit space is U. The objective is convex
        along the line, so its derivative is monotone: bracket, then secant steps on the derivative.
        Trial steps cost only element-wise work on the (n, k) logits."""
        f0, lam = t.f, t.lam
        slack = 1e-7 * max(1.0, abs(f0))  # float32 round-off in the loss

        def phi(a: float) -> tuple[float, float, float, F32, F32]:
            Zt = U * np.float32(a)
            Zt += t.Zl
            fd, R = self._loss_grad(t, Zt)
            f = fd + pen0 + lam * (a * wp + 0.5 * a * a * pp)
            df = float(np.vdot(R, U)) + lam * (wp + a * pp)
            return f, df, fd, R, Zt

        lo, flo, dlo = 0.0, f0, d0
        hi, dhi = math.inf, None
        best: _Searched | None = None
        a = 1.0
        for _ in range(max_steps):
            fa, da, fd, R, Zt = phi(a)
            armijo = fa <= f0 + c1 * a * d0 + slack
            if armijo and (best is None or fa < best[1]):
                best = (a, fa, fd, R, Zt)
            if not armijo or fa > flo + slack:
                hi, dhi = a, da
            elif abs(da) <= -c2 * d0:
                return a, fa, fd, R, Zt
            elif da > 0:
                hi, dhi = a, da
            else:
                lo, flo, dlo = a, fa, da
            if hi == math.inf:
                a = 4.0 * a
                continue
            width = hi - lo
            if width <= 1e-10 * max(1.0, hi):
                break
            cand = lo + 0.5 * width
            if dhi is not None and dhi > dlo:
                cand = lo - dlo * width / (dhi - dlo)
            a = min(max(cand, lo + 0.1 * width), hi - 0.1 * width)
        if best is not None and best[1] < f0:
            return best
        return 0.0, f0, t.f_data, t.R, t.Zl  # no step: the caller keeps the task where it is
