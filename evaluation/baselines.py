"""Ridge baselines with the same image features and the same splits as LEA.

- Encoding baseline: voxel-wise ridge from the image features of the stimulus to
  every voxel (one alpha per voxel, chosen by k-fold cross-validation on the
  training trials), with an intercept.
- Decoding baseline: ridge from the voxels to the image features (one alpha per
  feature dimension, same CV), with an intercept, scored in feature space.
- Retrieval (`evaluation.retrieval`): the training image whose features are nearest
  to the predicted ones.

The ridge is solved in closed form through one SVD of the centred inputs per fold:
W(alpha) = V diag(s / (s^2 + alpha)) U^T Y, so every alpha of the grid costs one
small matrix product; no library beyond numpy is needed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from models.alignment import kfold_indices
from utils.errors import ConfigError, DataError, describe

DEFAULT_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
DEFAULT_FOLDS = 5


def _svd_parts(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre x `[N, D]`, y `[N, T]`; -> s `[r]`, Vt `[r, D]`, U^T y_c `[r, T]`, x mean, y mean."""
    x_mean, y_mean = x.mean(0), y.mean(0)
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    return s, vt, u.T @ (y - y_mean), x_mean, y_mean


def _shrink(s: np.ndarray, alpha: float) -> np.ndarray:
    return s / (s * s + alpha)  # [r]


@dataclass
class VoxelwiseRidge:
    """Multi-target ridge `y ≈ x W + b` with one alpha per target chosen by k-fold CV."""

    alphas: Sequence[float] = DEFAULT_ALPHAS
    folds: int = DEFAULT_FOLDS
    seed: int = 0
    weight: np.ndarray | None = None          # [D, T]
    intercept: np.ndarray | None = None       # [T]
    alpha_per_target: np.ndarray | None = None  # [T]
    cv_mse: np.ndarray | None = field(default=None, repr=False)  # [A, T] mean validation MSE

    def fit(self, x: np.ndarray, y: np.ndarray) -> "VoxelwiseRidge":
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
            raise DataError(describe("ridge baseline", "inputs [N, D] and targets [N, T]", f"{x.shape}, {y.shape}"))
        if not self.alphas or min(self.alphas) <= 0:
            raise ConfigError(describe("baseline alphas", "a non-empty list of alphas > 0", list(self.alphas)))
        alphas = [float(a) for a in self.alphas]
        sq_err = np.zeros((len(alphas), y.shape[1]))
        for val in kfold_indices(len(x), self.folds, seed=self.seed):
            val = val.numpy()
            train = np.ones(len(x), dtype=bool)
            train[val] = False
            s, vt, uty, x_mean, y_mean = _svd_parts(x[train], y[train])
            x_val = (x[val] - x_mean) @ vt.T                      # [n_val, r]
            for k, alpha in enumerate(alphas):
                pred = x_val @ (_shrink(s, alpha)[:, None] * uty) + y_mean  # [n_val, T]
                sq_err[k] += ((pred - y[val]) ** 2).sum(0)
        self.cv_mse = sq_err / len(x)
        best = self.cv_mse.argmin(0)                               # [T]
        self.alpha_per_target = np.asarray(alphas)[best]
        s, vt, uty, x_mean, y_mean = _svd_parts(x, y)
        coef = np.empty_like(uty)                                  # [r, T]
        for k, alpha in enumerate(alphas):
            cols = best == k
            coef[:, cols] = _shrink(s, alpha)[:, None] * uty[:, cols]
        self.weight = vt.T @ coef                                  # [D, T]
        self.intercept = y_mean - x_mean @ self.weight
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.weight is None:
            raise ConfigError("ridge baseline is not fitted: call fit(x, y) first")
        return np.asarray(x, dtype=np.float64) @ self.weight + self.intercept

    def describe(self) -> dict:
        """Alpha grid, folds and how often each alpha was chosen (plain JSON values)."""
        chosen = {str(a): int((self.alpha_per_target == a).sum()) for a in self.alphas}
        return {"alphas": [float(a) for a in self.alphas], "cv_folds": self.folds, "chosen_alpha_counts": chosen}
