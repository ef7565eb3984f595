"""Noise ceilings of encoding from repeated test trials (recorded or simulated data).

The encoding score is the voxel-wise Pearson r, over the N test images, between
predicted fMRI and the measured test fMRI averaged over the k repeats of each
image. Model each single trial as `signal(image) + noise` with independent noise
of variance s2 per voxel. The best any prediction can expect is the correlation
of the noise-free signal with the k-trial average,

    r_ceil = sqrt(var_signal / (var_signal + s2 / k))

(with unequal repeat counts `1 / k` is the mean over images of `1 / k_i`).

Estimator (the noise-ceiling-SNR method of the Natural Scenes Dataset, Allen et
al. 2022, with a small-sample correction): s2 is the pooled within-image variance
of the single trials (unbiased, degrees of freedom sum(k_i - 1)); the explainable
fraction of a voxel is 1 - (s2 / k) / var_avg, var_avg the variance over images
of the repeat averages, corrected for the bias of 1 / var_avg (see
`explainable_fraction`). A group of voxels (all, or one ROI) has the ceiling
sqrt(mean explainable fraction); the fraction of the ceiling a model reaches is
mean voxel r / that ceiling.

Everything works on `RepeatStats` (per-image averages, within-image sums of
squares and counts), so it can be bootstrapped over test images by re-indexing.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from utils.errors import DataError, describe

MIN_IMAGES = 3


@dataclass
class RepeatStats:
    """Per-image statistics of single test trials (V voxels, N images)."""

    means: np.ndarray    # float64 [N, V] average over each image's repeats
    within_ss: np.ndarray  # float64 [N, V] sum of squared deviations from that average
    counts: np.ndarray   # int64 [N] repeats per image

    def take(self, rows: np.ndarray) -> "RepeatStats":
        """The same statistics for images `rows` (e.g. a bootstrap resample)."""
        return RepeatStats(self.means[rows], self.within_ss[rows], self.counts[rows])


def repeat_stats(trials: np.ndarray, image_index: np.ndarray, n_images: int | None = None) -> RepeatStats:
    """Single trials `[R, V]` with the image row of each trial `[R]` -> `RepeatStats`.

    Every image 0..n_images-1 needs at least 2 trials.
    """
    x = np.asarray(trials, dtype=np.float64)
    idx = np.asarray(image_index, dtype=np.int64)
    if x.ndim != 2 or idx.shape != (x.shape[0],):
        raise DataError(describe("single test trials", "trials [R, V] and an image index [R]",
                                 f"{x.shape} and {idx.shape}"))
    n = int(idx.max()) + 1 if n_images is None else int(n_images)
    counts = np.bincount(idx, minlength=n)[:n]
    if idx.min() < 0 or idx.max() >= n or (counts < 2).any():
        raise DataError(describe("single test trials", f"at least 2 trials for each of the {n} test images",
                                 f"counts from {int(counts.min())} to {int(counts.max())}"))
    if n < MIN_IMAGES:
        raise DataError(describe("single test trials", f"at least {MIN_IMAGES} test images", n))
    sums = np.zeros((n, x.shape[1]))
    np.add.at(sums, idx, x)
    means = sums / counts[:, None]                                   # [N, V]
    within = np.zeros_like(sums)
    np.add.at(within, idx, (x - means[idx]) ** 2)                    # [N, V]
    return RepeatStats(means, within, counts.astype(np.int64))


def explainable_fraction(stats: RepeatStats) -> np.ndarray:
    """Per voxel `[V]`: estimated fraction of the repeat-averaged variance that is signal (unclipped).

    rho = 1 - (s2 * mean(1/k_i)) / var_avg * (N - 3) / (N - 1), where var_avg is the
    variance over the N images of the per-image averages (ddof 1) and s2 the pooled
    within-image variance. The factor (N - 3) / (N - 1) removes the bias of 1 / var_avg
    (E[1 / chi2_df] = 1 / (df - 2)), so the mean of rho over voxels is unbiased for the
    mean true fraction. Single voxels can come out below 0 (or nan when constant).
    """
    n = len(stats.counts)
    noise_var = stats.within_ss.sum(0) / (stats.counts - 1).sum()   # [V]
    inv_k = float(np.mean(1.0 / stats.counts))
    var_avg = stats.means.var(0, ddof=1)                             # [V]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = noise_var * inv_k / np.where(var_avg > 0, var_avg, np.nan)
    return 1.0 - ratio * (n - 3) / (n - 1)


def voxel_ceiling(stats: RepeatStats) -> np.ndarray:
    """Noise-ceiling r per voxel `[V]`: sqrt of the explainable fraction clipped to [0, 1]."""
    return np.sqrt(np.clip(explainable_fraction(stats), 0.0, 1.0))


def group_ceiling(rho: np.ndarray) -> float:
    """Ceiling r of a voxel group: sqrt of the mean explainable fraction (nan voxels ignored).

    This root-mean-square of the voxel ceilings is estimable without bias from few
    test images (the mean of per-voxel square roots is not: clipping and the
    concave root bias it low); it exceeds the mean of the true voxel ceilings by
    their spread only (about 0.01 on the simulator).
    """
    valid = rho[np.isfinite(rho)]
    return float(np.sqrt(max(valid.mean(), 0.0))) if valid.size else float("nan")


def fraction_of_ceiling(r: np.ndarray, rho: np.ndarray) -> float | None:
    """mean(r) / group_ceiling(rho) over voxels where both are defined; None without a positive ceiling."""
    both = np.isfinite(r) & np.isfinite(rho)
    if not both.any():
        return None
    ceiling = group_ceiling(rho[both])
    return float(r[both].mean() / ceiling) if ceiling > 0 else None
