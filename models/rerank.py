"""Best-of-N sampling: keep the generated image whose features agree best with the condition.

MaskGIT draws several candidates per output sample; the image-feature extractor (the one whose
features condition MaskGIT) describes each candidate, and the candidate whose features agree best
with the condition is kept. Agreement is the cosine similarity after standardising every feature
dimension with the training images' mean and standard deviation, so that dimensions with little
variance (where, in the demo's features, the object's shape lives) count as much as the leading ones.
"""
from __future__ import annotations

import numpy as np
import torch

STD_FLOOR = 1e-8   # a feature dimension constant over the training images is not scaled up


def feature_agreement(candidates: torch.Tensor, condition: torch.Tensor, mean: torch.Tensor,
                      std: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of standardised features.

    candidates [T, ..., D] (features of generated images), condition [T, D], mean / std [D]
    (per-dimension statistics of the training images' features) -> agreement [T, ...].
    """
    scale = std.to(candidates).clamp_min(STD_FLOOR)
    z = (candidates - mean.to(candidates)) / scale  # [T, ..., D]
    c = (condition.to(candidates) - mean.to(candidates)) / scale  # [T, D]
    c = c.reshape(c.shape[0], *([1] * (z.dim() - 2)), c.shape[-1])  # [T, 1.., D]
    return torch.nn.functional.cosine_similarity(z, c, dim=-1)


def best_candidates(candidates: torch.Tensor, condition: torch.Tensor, mean: torch.Tensor,
                    std: torch.Tensor) -> torch.Tensor:
    """candidates [T, S, K, D] (K candidates for each of S samples), condition [T, D] -> index of the
    kept candidate of every sample, long [T, S] in [0, K); ties keep the first."""
    return feature_agreement(candidates, condition, mean, std).argmax(-1)  # [T, S]


def take_kept(images: np.ndarray, keep: torch.Tensor) -> np.ndarray:
    """images [T, S, K, ...] (K candidates per sample), keep long [T, S] -> the kept ones [T, S, ...]."""
    index = keep.cpu().numpy().reshape(*keep.shape, 1, *([1] * (images.ndim - 3)))  # [T, S, 1, 1..]
    return np.take_along_axis(images, index, 2)[:, :, 0]
