"""Encoding scores of one model with bootstrap intervals and the noise ceiling from repeats.

`encoding_scores` returns, for predicted fMRI `[N, V]` against the measured
(repeat-averaged) test fMRI: voxel-wise Pearson r (mean, median, per ROI), MSE
(mean, per ROI), identification of the image from the predicted fMRI, and —
when the single test trials are known — the fraction of the noise ceiling reached
(all voxels and per ROI). Every number gets a bootstrap interval over the test
images: correlations and ceilings are recomputed on each resample of the images.
`ceiling_metrics` reports the ceiling itself (it does not depend on the model).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from evaluation import metrics as M
from evaluation.ceiling import RepeatStats, explainable_fraction, fraction_of_ceiling, group_ceiling
from evaluation.uncertainty import mean_replicates, resampled_voxel_r, set_interval

CEILING_NAME = "noise_ceiling_r"
FRACTION_NAME = "fraction_of_ceiling"
CEILING_METHOD = ("noise-ceiling SNR from the single test trials (pooled within-image variance, "
                  "small-sample corrected); group ceiling = sqrt(mean explainable fraction)")


def _groups(roi_patch, roi_names, n_voxels: int) -> list[tuple[str, slice]]:
    """('' for all voxels, slice) then ('_<ROI>', slice) for each ROI group."""
    return [("", slice(None))] + [(f"_{roi}", sl) for roi, sl in M.roi_slices(roi_patch, roi_names, n_voxels)]


def _nan_stat(stat):
    def reduce(values: np.ndarray) -> float:
        valid = values[np.isfinite(values)]
        return float(stat(valid)) if valid.size else float("nan")
    return reduce


def ceiling_metrics(stats: RepeatStats | None, roi_patch, roi_names, n_voxels: int, indices: np.ndarray,
                    level: float, skip_reason: str) -> list[M.Metric]:
    """Noise ceiling r of all voxels and of each ROI, with intervals; skipped without single trials."""
    groups = _groups(roi_patch, roi_names, n_voxels)
    if stats is None:
        return [M.skipped(f"{CEILING_NAME}{suffix}", skip_reason) for suffix, _ in groups]
    rho = explainable_fraction(stats)
    replicates = np.array([[group_ceiling(r[sl]) for _, sl in groups]
                           for r in (explainable_fraction(stats.take(rows)) for rows in indices)])  # [B, G]
    out = []
    details = {"method": CEILING_METHOD, "repeats_per_image": sorted({int(k) for k in stats.counts}),
               "n_images": int(len(stats.counts))}
    for g, (suffix, sl) in enumerate(groups):
        value = group_ceiling(rho[sl])
        if not np.isfinite(value):
            out.append(M.skipped(f"{CEILING_NAME}{suffix}", "no voxel with a defined ceiling"))
            continue
        metric = M.Metric(f"{CEILING_NAME}{suffix}", value, None,
                          details={**details, "n_voxels": int(rho[sl].size),
                                   "voxels_without_signal": int((rho[sl] <= 0).sum())})
        out.append(set_interval(metric, replicates[:, g], level, correct_bias=True))
    return out


def encoding_scores(measured: np.ndarray, predicted: np.ndarray, roi_patch: Sequence[int] | None,
                    roi_names: Sequence[str] | None, stats: RepeatStats | None, indices: np.ndarray,
                    level: float, n_way: int | None, skip_reason: str) -> list[M.Metric]:
    """Encoding metrics of one model with intervals; see the module docstring."""
    m = np.asarray(measured, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    out = M.encoding_pearson(m, p, roi_patch, roi_names) + M.encoding_mse(m, p, roi_patch, roi_names)
    groups = _groups(roi_patch, roi_names, m.shape[1])
    by_name = {metric.name: metric for metric in out}

    # Pearson: mean and median over all voxels, mean per ROI, recomputed per resample
    names = ["encoding_pearson_mean", "encoding_pearson_median"] + [f"encoding_pearson{s}" for s, _ in groups[1:]]
    mean, median = _nan_stat(np.mean), _nan_stat(np.median)

    def reduce(r: np.ndarray, rows: np.ndarray) -> list[float]:
        values = [mean(r), median(r)] + [mean(r[sl]) for _, sl in groups[1:]]
        if stats is not None:
            rho = explainable_fraction(stats.take(rows))
            values += [fraction_of_ceiling(r[sl], rho[sl]) or float("nan") for _, sl in groups]
        return values

    replicates = resampled_voxel_r(m, p, indices, reduce)  # [B, K]
    for k, name in enumerate(names):
        if by_name[name].value is not None:
            set_interval(by_name[name], replicates[:, k], level, correct_bias=True)

    # MSE is a mean over images of per-image errors: resample those
    sq = (m - p) ** 2  # [N, V]
    for suffix, sl in groups:
        name = f"encoding_mse{'_mean' if suffix == '' else suffix}"
        if by_name[name].value is not None:
            set_interval(by_name[name], mean_replicates(sq[:, sl].mean(1), indices), level)

    r = M.voxelwise_pearson(m, p)
    if stats is None:
        out += [M.skipped(f"{FRACTION_NAME}{suffix}", skip_reason) for suffix, _ in groups]
    else:
        rho = explainable_fraction(stats)
        for g, (suffix, sl) in enumerate(groups):
            value = fraction_of_ceiling(r[sl], rho[sl])
            name = f"{FRACTION_NAME}{suffix}"
            if value is None:
                out.append(M.skipped(name, "no positive noise ceiling in this voxel group"))
                continue
            metric = M.Metric(name, value, None, details={"method": CEILING_METHOD,
                                                          "definition": "mean voxel r / group noise ceiling"})
            out.append(set_interval(metric, replicates[:, len(names) + g], level, correct_bias=True))
    out += M.fmri_identification(m, p, n_way=n_way)
    return out
