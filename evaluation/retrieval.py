"""Retrieval baseline: the training image nearest to a predicted image feature.

A decoder that only had to pick among the training images would return, for each
test trial, the training image whose features correlate best (Pearson r) with the
features predicted from the fMRI. Scoring those images like LEA's reconstructions
shows what generation adds over look-up. The training and test categories of GOD
are disjoint, so retrieval can never return the test image itself.
"""
from __future__ import annotations

import numpy as np

from evaluation.metrics import _unit_rows


def nearest_training(predicted: np.ndarray, train_features: np.ndarray) -> np.ndarray:
    """Predicted features `[N, D]`, training-image features `[M, D]` -> index of the nearest `[N]` (Pearson r)."""
    p = _unit_rows(np.asarray(predicted, dtype=np.float64), centre=True)        # [N, D]
    t = _unit_rows(np.asarray(train_features, dtype=np.float64), centre=True)   # [M, D]
    return np.nanargmax(p @ t.T, axis=1)  # [N]
