"""The linear probe: softmax (Multiclass) or one-vs-rest sigmoid (Multilabel) on L2-normalised embeddings.

Follows scikit-learn's estimator contract: `fit` returns self, learned attributes end in `_`.

The objective is scikit-learn's (class-balanced sample weights, L2 penalty ||W||² / 2C, averaged by the
total sample weight; the bias is not penalised). How it is minimised, for speed:

* The features are centred and rotated onto their principal axes once per data set (`Design`). That is an
  exact reparametrisation: X W + b = (X - mu) V (Vᵀ W) + (b + mu W), and the penalty is rotation invariant.
  Directions without variance are dropped, which does not change the optimum (the penalty keeps their
  weights at 0): with fewer images than dimensions the problem shrinks from d to n columns (the
  representer / SVD trick). The rotation uses no labels, so a k-fold model fitted in these coordinates
  is the model fitted on its training rows alone.
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

import io
import math
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

DEFAULT_CS = (1.0, 3.0, 10.0, 30.0, 100.0)
# Stop when the estimated distance to the optimum (half the squared preconditioned gradient, in units of
# the mean log-loss) falls below this. 1e-5 is far below the C-to-C differences the selection looks at.
DEFAULT_TOL = 1e-5
_DROP_REL = 1e-9  # principal directions with variance below this fraction of the largest are dropped
_CHUNK = 8192


def sample_weights(Y: np.ndarray, multilabel: bool) -> np.ndarray:
    """Class-balanced weights: per row (multiclass) or per cell (multilabel), as scikit-learn's 'balanced'."""
    n, k = Y.shape
    if not multilabel:
        counts = Y.sum(0)
        per_class = n / (k * np.maximum(counts, 1))
        return (Y @ per_class).astype(np.float32)
    pos = Y.sum(0)
    neg = n - pos
    wpos = n / (2 * np.maximum(pos, 1))
    wneg = n / (2 * np.maximum(neg, 1))
    return np.where(Y > 0, wpos, wneg).astype(np.float32)


class Design:
    """Centred features on their principal axes: Z = (X - mu) V, with the variance of each column.

    Built once per feature matrix and shared by every fit on its rows (k-fold, C path, final model).
    """

    def __init__(self, X: np.ndarray):
        X = np.ascontiguousarray(X, np.float32)
        n, d = X.shape
        self.n, self.d = n, d
        self.mu = X.mean(0, dtype=np.float64).astype(np.float32) if n else np.zeros(d, np.float32)
        if n == 0:
            self.V = np.zeros((d, 0), np.float32)
            self.Z = np.zeros((0, 0), np.float32)
            self.var = np.zeros(0, np.float32)
            return
        if n >= d:
            G = np.zeros((d, d), np.float64)
            for i in range(0, n, _CHUNK):
                c = X[i:i + _CHUNK] - self.mu
                G += c.T @ c
            ev, V = _eigh(G.astype(np.float32))  # V is orthonormal to float32 precision: all the rotation needs
            keep = ev > max(float(ev[0]), 1e-30) * _DROP_REL
            ev, V = ev[keep], np.ascontiguousarray(V[:, keep], np.float32)
            Z = np.empty((n, V.shape[1]), np.float32)
            for i in range(0, n, _CHUNK):
                np.matmul(X[i:i + _CHUNK] - self.mu, V, out=Z[i:i + _CHUNK])
        else:  # fewer images than dimensions: work in the n-dimensional span of the rows
            Xc = X - self.mu
            ev, U = _eigh((Xc @ Xc.T).astype(np.float64))
            keep = ev > max(float(ev[0]), 1e-30) * _DROP_REL
            ev, U = ev[keep], U[:, keep]
            root = np.sqrt(ev)
            V = np.ascontiguousarray((Xc.T @ (U / root).astype(np.float32)), np.float32)  # orthonormal columns
            Z = np.ascontiguousarray(U * root, np.float32)
        self.V = V
        self.Z = Z
        self.var = (ev / n).astype(np.float32)

    @property
    def rank(self) -> int:
        return int(self.V.shape[1])

    def to_original(self, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Rotated (r, k) weights and bias -> (d + 1, k) weights on the original features, bias last."""
        Wo = self.V @ np.asarray(W, np.float32)
        bo = np.asarray(b, np.float32) - self.mu @ Wo
        return np.concatenate([Wo, bo[None]]).astype(np.float32)

    def from_original(self, Wb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Wb = np.asarray(Wb, np.float32)
        Wo, bo = Wb[:-1], Wb[-1]
        return (self.V.T @ Wo).astype(np.float32), (bo + self.mu @ Wo).astype(np.float32)


def _eigh(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, clipped at 0) and eigenvectors of a symmetric matrix."""
    from scipy.linalg import eigh

    ev, V = eigh(M, driver="evd", overwrite_a=True, check_finite=False)
    return np.maximum(ev[::-1], 0.0), V[:, ::-1]


_design_lock = threading.Lock()
_design_cache: dict = {}


def _fingerprint(X: np.ndarray) -> tuple:
    flat = X.reshape(-1)
    step = max(1, flat.size // 4096)
    return X.shape, str(X.dtype), float(np.sum(X, dtype=np.float64)), flat[::step].tobytes()


def design_for(X: np.ndarray) -> Design:
    """The Design of X, reused while the same unchanged array is passed again (cross-validation, then the
    final fit on the same features)."""
    X = np.ascontiguousarray(X, np.float32)
    fp = _fingerprint(X)
    with _design_lock:
        ref = _design_cache.get("ref")
        if ref is not None and ref() is X and _design_cache.get("fp") == fp:
            return _design_cache["design"]
    design = Design(X)
    with _design_lock:
        _design_cache.clear()
        _design_cache.update(ref=weakref.ref(X), fp=fp, design=design, warm={})
    weakref.finalize(X, _forget, id(design))  # the cache never outlives the features
    return design


def clear_design_cache() -> None:
    """Forget the cached Design (benchmarks time a training from scratch with it)."""
    with _design_lock:
        _design_cache.clear()


def _forget(design_id: int) -> None:
    with _design_lock:
        if id(_design_cache.get("design")) == design_id:
            _design_cache.clear()


def _warm_starts(design: Design) -> dict:
    with _design_lock:
        if _design_cache.get("design") is design:
            return _design_cache["warm"]
    return {}


class _Task:
    """One L-BFGS run over a path of Cs: the rows it trains on carry weight, held-out rows weigh 0."""

    def __init__(self, w: np.ndarray, sw: float, Cs, W0=None, b0=None, keep=None):
        self.w = w  # (n,) or, multilabel, (k, n) weights normalised to sum 1, zero on held-out rows
        self.sw = sw  # their sum before normalising: the penalty is relative to it
        self.Cs = list(Cs)
        self.keep = keep  # rows whose logits are recorded at each C (the held-out fold)
        self.W0, self.b0 = W0, b0
        self.stage = -1
        self.results: list = []  # per C: (W, b, logits on the kept rows)
        self.iterations = 0
        self.done = False
        self.tol: float | None = None  # the solver's unless set


class Solver:
    """L-BFGS on the rotated, diagonally preconditioned problem, for several tasks in lock-step.

    Tasks (the k-fold models, each walking its own C path) share the Design's rows, so their two matrix
    products per iteration run as one wide product (BLAS, all cores), much faster than several thin ones.
    Everything else is element-wise or vector work per task, in numpy (single-threaded operations: on a
    busy machine small multi-threaded ones spend more time waiting for each other than computing), with
    the tasks spread over a thread per core.
    """

    def __init__(self, Z, Y: np.ndarray, multilabel: bool, var, tol: float = DEFAULT_TOL, max_iter: int = 500,
                 history: int = 20):
        self.Z = Z  # (n, r)
        self.Y = np.ascontiguousarray(Y, np.float32)
        self.Yt = np.ascontiguousarray(self.Y.T)  # logits and residuals are class-major, (k, n): reductions
        self.multilabel = multilabel             # over the classes then run along contiguous rows
        self.var = np.asarray(var, np.float32)
        self.tol, self.max_iter, self.history = tol, max_iter, history
        n, k = self.Y.shape
        one_hot = not multilabel and n > 0 and bool(((self.Y == 0) | (self.Y == 1)).all()) and bool((self.Y.sum(1) == 1).all())
        self.labels = self.Y.argmax(1) if one_hot else None
        self.n, self.k, self.r = n, k, int(Z.shape[1])
        # curvature of the data loss per logit at the start: about 1/k for the softmax; 1/4 per sigmoid
        # cell, with the loss averaged over the k columns
        self.curv = (0.25 / k) if multilabel else (1.0 / k)

    def task(self, rows: np.ndarray | None, Cs, W0=None, b0=None, keep: np.ndarray | None = None) -> _Task:
        """A task training on `rows` (all when None) with class-balanced weights computed on those rows;
        its logits on the rows `keep` are recorded at each C."""
        n, k = self.Y.shape
        idx = np.arange(n) if rows is None else np.asarray(rows)
        w_rows = sample_weights(self.Y[idx], self.multilabel)
        w = np.zeros((n,) if not self.multilabel else (n, k), np.float32)
        w[idx] = w_rows
        sw = float(w_rows.sum(dtype=np.float64))
        w = np.ascontiguousarray(w.T) / np.float32(sw)  # (n,) or (k, n)
        return _Task(w, sw, Cs, W0, b0, keep)

    # ---- products with the design
    def _times(self, M: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """(Z @ M + bias)ᵀ: (m, n) for M (r, m)."""
        out = np.empty((M.shape[1], self.n), np.float32)
        if self.r:
            np.matmul(M.T, self.Z.T, out=out)
            out += bias[:, None]
        else:
            out[:] = bias[:, None]
        return out

    def _times_t(self, Rt: np.ndarray) -> np.ndarray:
        """Zᵀ R for Rt = Rᵀ (m, n): (r, m)."""
        return (Rt @ self.Z).T if self.r else np.zeros((0, Rt.shape[0]), np.float32)

    # ---- the loss as a function of the logits
    def _loss_grad(self, t: _Task, Zl: np.ndarray):
        """Weighted mean data loss at class-major logits Zl (k, n) and its gradient dL/dZl (weights in)."""
        from scipy.special import expit

        Yt = self.Yt
        if self.multilabel:
            loss = float(np.sum(t.w * (np.logaddexp(np.float32(0), Zl) - Yt * Zl), dtype=np.float64))
            R = expit(Zl)
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

    def _begin(self, tasks: list[_Task]) -> None:
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

    def _next_stage(self, t: _Task) -> None:
        t.stage += 1
        if t.stage >= len(t.Cs):
            t.done = True
            return
        C = t.Cs[t.stage]
        old_s, old_lam = getattr(t, "s", None), getattr(t, "lam", None)
        t.lam = 1.0 / (C * t.sw)
        t.s = (1.0 / np.sqrt(self.curv * self.var + t.lam)).astype(np.float32)[:, None]  # W = s * B
        t.sb = np.float32(1.0 / math.sqrt(self.curv))  # b = sb * beta
        t.x = np.concatenate([(t.W / t.s).ravel(), t.b / t.sb]).astype(np.float32)
        t.f = t.f_data + 0.5 * t.lam * float(np.vdot(t.W, t.W))
        t.g = self._grad(t, t.W, t.ZR, t.R)
        # keep the curvature pairs: the data term's are unchanged, the penalty's change is known exactly
        S = []
        if old_s is not None:
            rk = self.r * self.k
            for sv, yv, _ in getattr(t, "S", []):
                dW = sv[:rk].reshape(self.r, self.k) * old_s
                yW = yv[:rk].reshape(self.r, self.k) / old_s + np.float32(t.lam - old_lam) * dW
                sv2 = np.concatenate([(dW / t.s).ravel(), sv[rk:]])
                yv2 = np.concatenate([(yW * t.s).ravel(), yv[rk:]])
                sy = float(np.dot(sv2, yv2))
                if sy > 1e-16:
                    S.append((sv2, yv2, 1.0 / sy))
        t.S = S
        t.stage_iter = 0

    def _grad(self, t: _Task, W: np.ndarray, ZR: np.ndarray, R: np.ndarray) -> np.ndarray:
        gW = (ZR + np.float32(t.lam) * W) * t.s
        return np.concatenate([gW.ravel(), t.sb * R.sum(1)]).astype(np.float32)

    def refine_last(self, tasks: list[_Task], tol: float, progress=None) -> None:
        """Continue every task's last C to a tighter tolerance, from where it stopped (state and curvature
        pairs intact); its recorded result for that C is replaced."""
        for t in tasks:
            t.results.pop()
            t.done, t.stage, t.stage_iter, t.tol = False, len(t.Cs) - 1, 0, tol
        self.run(tasks, progress, resume=True)

    def _finish_stage(self, t: _Task) -> None:
        t.results.append((t.W.copy(), t.b.copy(), None if t.keep is None else t.Zl[:, t.keep].T))
        self._next_stage(t)

    def _direction(self, t: _Task):
        """L-BFGS two-loop recursion in the scaled coordinates; None when the stage has converged."""
        g = t.g
        gg = float(np.dot(g, g))
        if 0.5 * gg <= (t.tol or self.tol) or t.stage_iter >= self.max_iter:
            return None
        q = g.copy()
        alphas = []
        for sv, yv, rho in reversed(t.S):
            a = rho * float(np.dot(sv, q))
            q -= np.float32(a) * yv
            alphas.append(a)
        if t.S:
            _, yv, rho = t.S[-1]
            q *= np.float32(1.0 / (rho * float(np.dot(yv, yv))))
        for (sv, yv, rho), a in zip(t.S, reversed(alphas)):
            c = rho * float(np.dot(yv, q))
            q += np.float32(a - c) * sv
        q = -q
        d0 = float(np.dot(g, q))
        if d0 >= 0:  # not a descent direction: restart from the (scaled) steepest descent
            t.S.clear()
            q, d0 = -g, -gg
        return q, d0

    def _split(self, t: _Task, v: np.ndarray):
        rk = self.r * self.k
        return v[:rk].reshape(self.r, self.k) * t.s, v[rk:] * t.sb  # (W, b) of a scaled vector

    def run(self, tasks: list[_Task], progress=None, resume: bool = False) -> None:
        """Advance every task through all of its Cs. The per-task work between the two shared products
        (directions, line searches, updates: numpy releases the GIL) runs on a thread per core."""
        workers = min(len(tasks), os.cpu_count() or 1)
        if workers <= 1:
            self._run(tasks, progress, map, resume)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="probe") as pool:
            self._run(tasks, progress, pool.map, resume)

    def _run(self, tasks: list[_Task], progress, pmap, resume: bool) -> None:
        k = self.k
        if not resume:
            self._begin(tasks)

        def advance(t: _Task):
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

        for t in tasks:
            t.pending = getattr(t, "pending", None) if resume else None
        while True:
            steps = []
            for t, (d, finished) in zip(tasks, list(pmap(advance, tasks))):
                for _ in range(finished if progress else 0):
                    progress()
                if d is not None:
                    steps.append((t, *d))
            if not steps:
                return
            # one wide product for every task's direction in logit space
            parts = [self._split(t, p) for t, p, _ in steps]
            U_all = self._times(np.concatenate([PW for PW, _ in parts], 1), np.concatenate([pb for _, pb in parts]))

            def search(j: int):
                t, p, d0 = steps[j]
                PW = parts[j][0]
                U = U_all[j * k:(j + 1) * k]
                pen0 = 0.5 * t.lam * float(np.vdot(t.W, t.W))
                wp, pp = float(np.vdot(t.W, PW)), float(np.vdot(PW, PW))
                return self._line_search(t, U, d0, pen0, wp, pp)

            moved = []
            for (t, p, _), (a, f_new, fd_new, R_new, Zl_new) in zip(steps, list(pmap(search, range(len(steps))))):
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

    def _apply(self, t: _Task, a, p, f_new, fd_new, R_new, Zl_new, ZR) -> None:
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

    def _line_search(self, t: _Task, U, d0, pen0, wp, pp, c1=1e-4, c2=0.9, max_steps=40):
        """A strong-Wolfe step along the direction, whose image in logit space is U. The objective is convex
        along the line, so its derivative is monotone: bracket, then secant steps on the derivative.
        Trial steps cost only element-wise work on the (n, k) logits."""
        f0, lam = t.f, t.lam
        slack = 1e-7 * max(1.0, abs(f0))  # float32 round-off in the loss

        def phi(a):
            Zt = U * np.float32(a)
            Zt += t.Zl
            fd, R = self._loss_grad(t, Zt)
            f = fd + pen0 + lam * (a * wp + 0.5 * a * a * pp)
            df = float(np.vdot(R, U)) + lam * (wp + a * pp)
            return f, df, fd, R, Zt

        lo, flo, dlo = 0.0, f0, d0
        hi, dhi = math.inf, None
        best = None
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
        return 0.0, f0, t.f_data, None, t.Zl


def _indicator(Y: np.ndarray) -> np.ndarray:
    Y = np.asarray(Y)
    if Y.ndim == 1:
        k = int(Y.max()) + 1 if len(Y) else 1
        out = np.zeros((len(Y), k), np.float32)
        out[np.arange(len(Y)), Y.astype(int)] = 1
        return out
    return Y.astype(np.float32)


def _label_key(Y: np.ndarray, multilabel: bool, C: float) -> tuple:
    Y = np.ascontiguousarray(Y, np.float32)
    return (Y.shape, bool(multilabel), float(C), hash(Y.tobytes()))


def fit_linear(X: np.ndarray, Y: np.ndarray, C: float, multilabel: bool, init: np.ndarray | None = None,
               max_iter: int = 500, tol: float = DEFAULT_TOL) -> np.ndarray:
    """Minimise the class-balanced, L2-regularised loss (scikit-learn's C convention, averaged by the
    total sample weight); returns the (d+1, k) weights on the original features with the bias last.

    A warm start left by `core.evaluation.cross_validate` on the same features, labels and C is used
    when there is one (the final model after the k-fold evaluation starts from the fold models' mean)."""
    design = design_for(X)
    Y = np.asarray(Y, np.float32)
    W0 = b0 = None
    if init is not None:
        W0, b0 = design.from_original(init)
    else:
        warm = _warm_starts(design).pop(_label_key(Y, multilabel, C), None)
        if warm is not None:
            W0, b0 = warm
    solver = Solver(design.Z, Y, multilabel, design.var, tol=tol, max_iter=max_iter)
    task = solver.task(None, [C], W0, b0)
    solver.run([task])
    W, b, _ = task.results[0]
    return design.to_original(W, b)


def predict_proba_linear(Wb: np.ndarray, X: np.ndarray, multilabel: bool) -> np.ndarray:
    from scipy.special import expit, log_softmax

    Z = np.asarray(X, np.float32) @ Wb[:-1] + Wb[-1]
    if multilabel:
        return expit(Z)
    return np.exp(log_softmax(Z, axis=1))


class LinearProbe:
    """Linear classifier on embeddings. `C` is the inverse regularisation strength; with `C=None`
    it is chosen by stratified k-fold cross-validation over `Cs` (see core.evaluation)."""

    def __init__(self, multilabel: bool = False, C: float | None = None, Cs: tuple[float, ...] = DEFAULT_CS,
                 max_iter: int = 500, random_state: int = 0):
        self.multilabel = multilabel
        self.C = C
        self.Cs = Cs
        self.max_iter = max_iter
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict:
        return {"multilabel": self.multilabel, "C": self.C, "Cs": self.Cs, "max_iter": self.max_iter,
                "random_state": self.random_state}

    def set_params(self, **params) -> "LinearProbe":
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "LinearProbe":
        """X: (n, d) embeddings. Y: (n, k) 0/1 indicator matrix, or (n,) class indices (multiclass)."""
        Y = _indicator(Y)
        C = self.C
        if C is None:
            from .evaluation import cross_validate

            C = cross_validate(X, Y, self.multilabel, Cs=self.Cs, seed=self.random_state).C
        self.C_ = float(C)
        self.coef_ = fit_linear(X, Y, self.C_, self.multilabel, max_iter=self.max_iter)
        self.n_features_in_ = X.shape[1]
        self.classes_ = np.arange(Y.shape[1])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return predict_proba_linear(self.coef_, X, self.multilabel)

    def predict(self, X: np.ndarray) -> np.ndarray:
        P = self.predict_proba(X)
        return (P >= 0.5).astype(int) if self.multilabel else P.argmax(1)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, coef=self.coef_, C=np.float64(self.C_), multilabel=np.bool_(self.multilabel))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "LinearProbe":
        z = np.load(io.BytesIO(data))
        probe = cls(multilabel=bool(z["multilabel"]), C=float(z["C"]))
        probe.coef_ = z["coef"].astype(np.float32)
        probe.C_ = float(z["C"])
        probe.n_features_in_ = probe.coef_.shape[0] - 1
        probe.classes_ = np.arange(probe.coef_.shape[1])
        return probe
