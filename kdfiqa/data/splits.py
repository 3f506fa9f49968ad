"""How a validation share is split off a labels file, as plain index arithmetic (no torch: configs
validate ``data.split_method`` against :data:`SPLIT_METHODS` without loading it)."""

from __future__ import annotations

import math

__all__ = ["SPLIT_METHODS", "validation_count", "validation_indices"]

SPLIT_METHODS = ("kdfiqa", "sklearn")
"""How ``data.val_fraction`` is split off ``data.csv``: ``kdfiqa`` (a ``numpy.random.default_rng``
permutation) or ``sklearn`` (the indices of ``sklearn.model_selection.train_test_split``, as the
ECNU-SJTU winner's ``FIQADataset`` draws them, reproduced without scikit-learn)."""


def validation_count(n: int, val_fraction: float, method: str = "kdfiqa") -> int:
    """How many of ``n`` samples :func:`split_dataset` puts in validation: ``round(n * val_fraction)``,
    at least one (``kdfiqa``); ``n - floor(n * (1 - val_fraction))`` (``sklearn``: what
    ``train_test_split(train_size=1 - val_fraction)`` leaves for the test share)."""
    if method == "sklearn":
        return n - math.floor((1.0 - val_fraction) * n)
    return max(1, round(n * val_fraction))


def validation_indices(n: int, n_val: int, seed: int, method: str) -> list[int]:
    """The ``n_val`` indices of ``range(n)`` that ``method`` holds out for validation with ``seed``."""
    import numpy as np

    if method == "sklearn":
        # ShuffleSplit's draw: a legacy RandomState(seed) permutation, its first n_val indices held out
        return np.random.RandomState(seed).permutation(n)[:n_val].tolist()
    return np.random.default_rng(seed).permutation(n)[:n_val].tolist()
