"""Fold assignment for the k-fold evaluation: stratified, so that every tag is in every fold."""
from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

MAX_FOLDS = 5


def n_folds(Y: npt.NDArray[Any], multilabel: bool, k: int = MAX_FOLDS) -> int:
    """At most k folds, and no more than the smallest tag has images (or, multilabel, images without it)."""
    counts = Y.sum(0)
    present = counts[counts > 0]
    smallest = int(present.min()) if len(present) else 0
    if multilabel:
        smallest = min(smallest, int((len(Y) - present).min()))
    return max(2, min(k, smallest))


def kfold_assignments(Y: npt.NDArray[Any], multilabel: bool, k: int = MAX_FOLDS,
                      seed: int = 0) -> npt.NDArray[np.int32]:
    """Fold index per image: StratifiedKFold (Multiclass) or iterative stratification (Multilabel)."""
    k = n_folds(Y, multilabel, k)
    folds = np.empty(len(Y), np.int32)
    if multilabel:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(Y)), Y.astype(int))
    else:
        from sklearn.model_selection import StratifiedKFold

        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(Y)), Y.argmax(1))
    for i, (_, test) in enumerate(splits):
        folds[test] = i
    return folds
