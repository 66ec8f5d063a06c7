"""The coordinates every probe fit works in: centred features rotated onto their principal axes.

That is an exact reparametrisation: X W + b = (X - mu) V (Vᵀ W) + (b + mu W), and the L2 penalty is
rotation invariant. Directions without variance are dropped, which does not change the optimum (the
penalty keeps their weights at 0): with fewer images than dimensions the problem shrinks from d to n
columns (the representer / SVD trick). The rotation uses no labels, so a k-fold model fitted in these
coordinates is the model fitted on its training rows alone, and one Design serves every fit on its rows:
the k-fold models, the C path and the final model (`LinearProbeCV` builds one and hands it to
`LinearProbe.fit_design`).
"""
from __future__ import annotations

from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

F32: TypeAlias = npt.NDArray[np.float32]
Floats: TypeAlias = npt.NDArray[np.floating[Any]]

_DROP_REL = 1e-9  # principal directions with variance below this fraction of the largest are dropped
_CHUNK = 8192


class Rotated(NamedTuple):
    """A linear model in a Design's coordinates: weights (r, k) and bias (k,)."""

    W: F32
    b: F32


class Design:
    """Centred features on their principal axes: Z = (X - mu) V, with the variance of each column.

    Built once per feature matrix and shared by every fit on its rows (k-fold, C path, final model).
    """

    def __init__(self, X: npt.ArrayLike):
        X = np.ascontiguousarray(X, np.float32)
        n, d = X.shape
        self.n, self.d = int(n), int(d)
        self.mu: F32 = X.mean(0, dtype=np.float64).astype(np.float32) if n else np.zeros(d, np.float32)
        self.V: F32
        self.Z: F32
        self.var: F32
        if n == 0:
            self.V = np.zeros((d, 0), np.float32)
            self.Z = np.zeros((0, 0), np.float32)
            self.var = np.zeros(0, np.float32)
            return
        ev: Floats
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

    def to_original(self, W: npt.ArrayLike, b: npt.ArrayLike) -> F32:
        """Rotated (r, k) weights and bias -> (d + 1, k) weights on the original features, bias last."""
        Wo = self.V @ np.asarray(W, np.float32)
        bo = np.asarray(b, np.float32) - self.mu @ Wo
        return np.concatenate([Wo, bo[None]]).astype(np.float32)

    def from_original(self, Wb: npt.ArrayLike) -> Rotated:
        """(d + 1, k) weights on the original features, bias last -> the same model in these coordinates."""
        Wb = np.asarray(Wb, np.float32)
        Wo, bo = Wb[:-1], Wb[-1]
        return Rotated((self.V.T @ Wo).astype(np.float32), (bo + self.mu @ Wo).astype(np.float32))


def _eigh(M: Floats) -> tuple[Floats, Floats]:
    """Eigenvalues (descending, clipped at 0) and eigenvectors of a symmetric matrix."""
    from scipy.linalg import eigh

    ev, V = eigh(M, driver="evd", overwrite_a=True, check_finite=False)
    return np.maximum(ev[::-1], 0.0), V[:, ::-1]
