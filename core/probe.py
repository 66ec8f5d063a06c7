"""The linear probe: softmax (Multiclass) or one-vs-rest sigmoid (Multilabel) on L2-normalised embeddings.

Follows scikit-learn's estimator contract: `fit` returns self, learned attributes end in `_`.
"""
from __future__ import annotations

import io

import numpy as np
from scipy.special import expit, log_expit, log_softmax

DEFAULT_CS = (1.0, 3.0, 10.0, 30.0, 100.0)


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


def fit_linear(X: np.ndarray, Y: np.ndarray, C: float, multilabel: bool, init: np.ndarray | None = None,
               max_iter: int = 300, tol: float = 1e-4) -> np.ndarray:
    """Minimise the class-balanced, L2-regularised loss (scikit-learn's C convention, averaged by the
    total sample weight) with full-batch L-BFGS; returns the (d+1, k) weights with the bias last."""
    import torch

    Xt = torch.from_numpy(np.ascontiguousarray(X, np.float32))
    Yt = torch.from_numpy(np.ascontiguousarray(Y, np.float32))
    W8 = torch.from_numpy(sample_weights(np.asarray(Y, np.float32), multilabel))
    d, k = Xt.shape[1], Yt.shape[1]
    theta = torch.zeros(d + 1, k) if init is None else torch.tensor(np.asarray(init, np.float32))
    theta.requires_grad_(True)
    scale = 1.0 / float(W8.sum())
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-9,
                            history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        Z = Xt @ theta[:-1] + theta[-1]
        if multilabel:
            loss = (W8 * torch.nn.functional.binary_cross_entropy_with_logits(Z, Yt, reduction="none")).sum()
        else:
            loss = -(W8 * (torch.log_softmax(Z, 1) * Yt).sum(1)).sum()
        loss = (loss + (theta[:-1] ** 2).sum() / (2 * C)) * scale
        loss.backward()
        return loss

    opt.step(closure)
    return theta.detach().numpy().copy()


def predict_proba_linear(Wb: np.ndarray, X: np.ndarray, multilabel: bool) -> np.ndarray:
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
        Y = self._indicator(Y)
        C = self.C
        if C is None:
            from .evaluation import cross_validate

            C = cross_validate(X, Y, self.multilabel, Cs=self.Cs, seed=self.random_state).C
        self.C_ = float(C)
        self.coef_ = fit_linear(X, Y, self.C_, self.multilabel, max_iter=self.max_iter)
        self.n_features_in_ = X.shape[1]
        self.classes_ = np.arange(Y.shape[1])
        return self

    def _indicator(self, Y: np.ndarray) -> np.ndarray:
        Y = np.asarray(Y)
        if Y.ndim == 1:
            k = int(Y.max()) + 1
            out = np.zeros((len(Y), k), np.float32)
            out[np.arange(len(Y)), Y.astype(int)] = 1
            return out
        return Y.astype(np.float32)

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
