"""The release's own decoding numbers, for setting results beside the published ones (spec §8).

The release ("for our work" metric list) evaluates each sample index on its own
(the N test images' s-th samples against the N ground truths) and reports the
mean, min and max over sample indices:
- `stack_ssim`: SSIM over the stacked images, i.e. skimage's structural_similarity
  of the whole `[N, H, W, 3]` arrays with the channel axis last — a 3-D SSIM whose
  7x7x7 windows also run across neighbouring images (so it depends on their order;
  no pair-wise identification and no per-image decomposition);
- pair-wise identification by SNR (`metrics.pairwise_identification(score='snr')`);
- `fid_per_sample`: FID with Inception features of size 64 between the s-th samples
  and the ground truths, averaged over sample indices;
- LPIPS AlexNet pair-wise identification ("PSM", `metrics.lpips_identification`).
MinD-Vis reports the n-way top-1 also for the best sample index
(`metrics.best_sample`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.metrics import (FID_REASON, NO_INTERVAL, PIXEL_MAX, SSIM_K1, SSIM_K2, SSIM_WINDOW, ArrayLike,
                                Metric, _paired_images, frechet_distance, skipped)
from utils.errors import DataError, describe

STACK_COV_NORM = SSIM_WINDOW ** 3 / (SSIM_WINDOW ** 3 - 1)  # sample covariance over a 7x7x7 window
NO_DECOMPOSITION = "a statistic of the whole stack of images has no per-image decomposition"


def _box3(x: torch.Tensor) -> torch.Tensor:
    """Mean over every 7x7x7 window that fits: `[C, N, H, W]` -> `[C, N-6, H-6, W-6]`."""
    return F.avg_pool3d(x[:, None], SSIM_WINDOW, stride=1)[:, 0]


def stack_ssim_value(gt: np.ndarray, recon: np.ndarray) -> float:
    """skimage SSIM of two image stacks `[N, H, W, 3]` (0..255, channel axis last, data range 255).

    skimage's defaults on a 3-D image per channel: uniform 7x7x7 window, K1 0.01,
    K2 0.03, sample covariance, mean over the region 3 voxels away from every
    border (which only sees windows inside the stack, hence 'valid' windows),
    averaged over channels. Needs N, H, W >= 7.
    """
    if min(gt.shape[:3]) < SSIM_WINDOW:
        raise DataError(describe("whole-stack SSIM", f"at least {SSIM_WINDOW} images of at least "
                                 f"{SSIM_WINDOW}x{SSIM_WINDOW} pixels", f"stack {gt.shape}"))
    x = torch.from_numpy(np.moveaxis(recon, -1, 0).copy())  # [3, N, H, W] float64
    y = torch.from_numpy(np.moveaxis(gt, -1, 0).copy())
    c1, c2 = (SSIM_K1 * PIXEL_MAX) ** 2, (SSIM_K2 * PIXEL_MAX) ** 2
    mx, my = _box3(x), _box3(y)
    vx = STACK_COV_NORM * (_box3(x * x) - mx * mx)
    vy = STACK_COV_NORM * (_box3(y * y) - my * my)
    vxy = STACK_COV_NORM * (_box3(x * y) - mx * my)
    ssim_map = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim_map.mean())


def _per_sample_metric(name: str, values: list[float], **details) -> Metric:
    """Mean over sample indices, with the per-sample values, their min, max and sd."""
    v = np.asarray(values)
    return Metric(name, float(v.mean()), None,
                  details={"per_sample": v.tolist(), "min_over_samples": float(v.min()),
                           "max_over_samples": float(v.max()), "sd_over_samples": float(v.std()),
                           NO_INTERVAL: NO_DECOMPOSITION, **details})


def stack_ssim(gt: ArrayLike, recon: ArrayLike) -> Metric:
    """The release's raw SSIM: `stack_ssim_value` per sample index, averaged over samples."""
    g, r = _paired_images(gt, recon)
    if min(g.shape[:3]) < SSIM_WINDOW:
        return skipped("stack_ssim", f"needs at least {SSIM_WINDOW} test images of at least "
                                     f"{SSIM_WINDOW}x{SSIM_WINDOW} pixels; found {g.shape[0]} of {g.shape[1:3]}")
    return _per_sample_metric("stack_ssim", [stack_ssim_value(g, r[:, s]) for s in range(r.shape[1])])


def fid_per_sample(gt: ArrayLike, recon: ArrayLike, features: Callable[[torch.Tensor], torch.Tensor] | None,
                   skip_reason: str | None = None) -> Metric:
    """FID of each sample index's N images against the N ground truths, averaged over samples (lower is better).

    features: float images `[B, 3, H, W]` in [0, 1] -> `[B, D]` (Inception, feature 64 in the release).
    """
    if features is None:
        return skipped("fid_per_sample", skip_reason or FID_REASON)
    g, r = _paired_images(gt, recon)

    def feats(pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            images = torch.from_numpy(np.moveaxis(pixels / PIXEL_MAX, -1, 1)).float()  # [N, 3, H, W]
            return features(images).detach().cpu().numpy().astype(np.float64)

    fg = feats(g)
    return _per_sample_metric("fid_per_sample", [frechet_distance(feats(r[:, s]), fg) for s in range(r.shape[1])],
                              n_images=int(len(g)))
