"""Retrieval baseline: show the training image whose features are nearest to a query feature.

Decoding could skip the image generator altogether and answer with the training
stimulus closest (in the image-feature space) to the features predicted from
fMRI. That baseline tells how much of a decoder's score the alignment alone
explains, and how much the generator adds or loses.

    indices = nearest_training_images(predicted [T, D], train_features [M, D], k=1)   # [T, k]
    indices, images = retrieve_images(predicted, train_features, train_images)          # images [T, k, H, W, 3]

Similarity is Pearson correlation ('pcc', the feature-identification score of
evaluation/metrics.py) or cosine. Ties go to the lower training index.
"""
from __future__ import annotations

import numpy as np
import torch

from evaluation.metrics import unit_rows
from utils.errors import ConfigError, DataError, describe

RETRIEVAL_METRICS = ("pcc", "cosine")


def similarity_to_training(query: torch.Tensor | np.ndarray, candidates: torch.Tensor | np.ndarray,
                           metric: str = "pcc") -> torch.Tensor:
    """Similarity of every query `[T, D]` with every candidate `[M, D]`: float64 `[T, M]`."""
    if metric not in RETRIEVAL_METRICS:
        raise ConfigError(describe("retrieval metric", f"one of {', '.join(RETRIEVAL_METRICS)}", repr(metric)))
    q, c = torch.as_tensor(query), torch.as_tensor(candidates)
    if q.ndim != 2 or c.ndim != 2 or q.shape[1] != c.shape[1] or len(c) == 0:
        raise DataError(describe("retrieval features", "queries [T, D] and at least one candidate [M, D]",
                                 f"{list(q.shape)} and {list(c.shape)}"))
    centre = metric == "pcc"
    # a constant (pcc) or zero (cosine) row has no direction: similarity 0 to everything
    q_unit, c_unit = (np.nan_to_num(unit_rows(x.double().numpy(), centre)) for x in (q, c))
    return torch.from_numpy(q_unit @ c_unit.T)  # [T, M]


def nearest_training_images(query: torch.Tensor | np.ndarray, candidates: torch.Tensor | np.ndarray,
                            k: int = 1, metric: str = "pcc") -> np.ndarray:
    """Rows of `candidates` `[M, D]` most similar to each query `[T, D]`, best first: int64 `[T, k]`."""
    sims = similarity_to_training(query, candidates, metric)  # [T, M]
    if not 1 <= k <= sims.shape[1]:
        raise ConfigError(describe("retrieval k", f"an integer in [1, {sims.shape[1]}] (the candidates)", k))
    # stable sort of the negated similarities: equal scores keep the lower index first
    order = torch.sort(-sims, dim=1, stable=True).indices[:, :k]  # [T, k]
    return order.numpy().astype(np.int64)


def retrieve_images(query: torch.Tensor | np.ndarray, candidates: torch.Tensor | np.ndarray,
                    images: np.ndarray, k: int = 1, metric: str = "pcc") -> tuple[np.ndarray, np.ndarray]:
    """The k nearest training images per query, laid out like decoded samples.

    Args:
        query: predicted features `[T, D]`.
        candidates: features of the training images `[M, D]`, row m describing `images[m]`.
        images: the training images, uint8 `[M, H, W, 3]`.
    Returns:
        indices int64 `[T, k]` and images uint8 `[T, k, H, W, 3]`.
    """
    if len(images) != len(candidates):
        raise DataError(describe("retrieval training images", f"one image per candidate feature ({len(candidates)})",
                                 f"{len(images)} images"))
    indices = nearest_training_images(query, candidates, k=k, metric=metric)
    return indices, np.asarray(images)[indices]  # [T, k, H, W, 3]
