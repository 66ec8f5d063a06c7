"""The linear probe: softmax (Multiclass) or one-vs-rest sigmoid (Multilabel) on L2-normalised embeddings.

`LinearProbe` fits at a given C, `LinearProbeCV` selects C by k-fold cross-validation (core.probe.estimators);
the objective and its solver are in core.probe.solver, the rotation every fit works in in core.probe.design,
the fold assignment in core.probe.folds.
"""
from .design import Design, Rotated
from .estimators import DEFAULT_CS, LinearProbe, LinearProbeCV, indicator, predict_proba
from .folds import MAX_FOLDS, kfold_assignments, n_folds
from .solver import DEFAULT_TOL, sample_weights

__all__ = [
    "DEFAULT_CS", "DEFAULT_TOL", "MAX_FOLDS", "Design", "LinearProbe", "LinearProbeCV", "Rotated", "indicator",
    "kfold_assignments", "n_folds", "predict_proba", "sample_weights",
]
