"""Uncertainty of every reported number: bootstrap intervals over test images, binomial p-values.

- Bootstrap: B resamples of the N test images with replacement (seeded); the
  interval is the percentile interval of the metric recomputed on each resample
  (shifted by the bootstrap bias for recomputed correlations and ceilings, `set_interval`).
  Metrics that are means of per-image values (identification rates, n-way
  accuracies) are re-averaged over the resampled images; encoding correlations are
  recomputed from the resampled rows (`resampled_voxel_r`). A metric without a
  per-image decomposition (FID, whole-stack SSIM) says why it has no interval.
- Exact binomial p-value against chance (one-sided, "better than chance") for
  identification accuracies: one trial per test image, the image's success rate
  (averaged over samples and random n-way draws) counted into round(N * accuracy)
  successes. That is exact for top-1 among all candidates with one sample and
  conservative for pair-wise rates (which pool N - 1 comparisons per image).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps

from evaluation.metrics import CI_KEY, NO_INTERVAL as NO_INTERVAL_KEY, Metric
from utils.errors import ConfigError, describe

DEFAULT_BOOTSTRAP = 1000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0


def bootstrap_indices(n: int, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED) -> np.ndarray:
    """`[n_boot, n]` rows of image indices drawn with replacement (seeded)."""
    if n < 2 or n_boot < 1:
        raise ConfigError(describe("bootstrap", "at least 2 items and 1 resample", f"{n} items, {n_boot} resamples"))
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_interval(replicates: Sequence[float], level: float = DEFAULT_LEVEL) -> tuple[float, float] | None:
    """Percentile interval of the finite bootstrap replicates; None when none is finite."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def set_interval(metric: Metric, replicates: Sequence[float], level: float = DEFAULT_LEVEL,
                 correct_bias: bool = False) -> Metric:
    """Store the percentile interval of `replicates` in `metric.details[CI_KEY]` (in place).

    correct_bias: shift the interval by the bootstrap bias, mean(replicates) - value.
    Statistics recomputed from resampled rows (correlations, noise ceilings) shrink
    when a resample repeats images, and their plain percentile interval can miss the
    point estimate; means of per-image values have no such bias and are not shifted.
    """
    interval = percentile_interval(replicates, level)
    if interval is None:
        metric.details[NO_INTERVAL_KEY] = "no finite bootstrap replicate"
    else:
        bias = 0.0
        if correct_bias:
            values = np.asarray(replicates, dtype=np.float64)
            bias = float(values[np.isfinite(values)].mean()) - float(metric.value)
            metric.details["ci_bias_correction"] = bias
        metric.details[CI_KEY] = [interval[0] - bias, interval[1] - bias]
        metric.details["ci_level"] = level
        metric.details["ci_resamples"] = int(len(replicates))
    return metric


def mean_replicates(per_item: Sequence[float], indices: np.ndarray) -> np.ndarray:
    """Mean of `per_item [N]` over each bootstrap row of `indices [B, N]` -> `[B]`."""
    return np.asarray(per_item, dtype=np.float64)[indices].mean(axis=1)


def resampled_voxel_r(measured: np.ndarray, predicted: np.ndarray, indices: np.ndarray,
                      reduce: Callable[[np.ndarray, np.ndarray], Sequence[float]]) -> np.ndarray:
    """Voxel-wise Pearson r on each resample of the images, reduced per resample.

    measured, predicted `[N, V]`; indices `[B, N]`; reduce(r [V], rows [N]) maps the
    r of one resample (and its image rows) to a list of numbers (e.g. per-ROI
    means). Returns `[B, K]`.
    """
    m = np.asarray(measured, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    out = []
    for rows in indices:
        mc, pc = m[rows] - m[rows].mean(0), p[rows] - p[rows].mean(0)  # [N, V]
        denom = np.sqrt((mc ** 2).sum(0) * (pc ** 2).sum(0))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(denom > 0, (mc * pc).sum(0) / np.where(denom > 0, denom, 1.0), np.nan)
        out.append(reduce(r, rows))
    return np.asarray(out)


def binomial_p_value(successes: int, trials: int, chance: float) -> float:
    """Exact one-sided binomial p-value P(X >= successes) for X ~ Binomial(trials, chance)."""
    if not 0 <= successes <= trials or trials < 1 or not 0.0 < chance < 1.0:
        raise ConfigError(describe("binomial test", "0 <= successes <= trials, trials >= 1, 0 < chance < 1",
                                   f"successes {successes}, trials {trials}, chance {chance}"))
    return float(sps.binomtest(int(successes), int(trials), chance, alternative="greater").pvalue)


def is_identification(metric: Metric) -> bool:
    """An accuracy against a chance level in (0, 1) with per-image rates."""
    return (metric.value is not None and metric.chance is not None and 0.0 < metric.chance < 1.0
            and "per_image" in metric.details)


def attach_uncertainty(metrics: Sequence[Metric], indices: np.ndarray, level: float = DEFAULT_LEVEL) -> None:
    """Give every computed metric an interval (or the reason it has none) and accuracies a p-value.

    Metrics that already carry an interval (computed where the data are) are left as they are.
    """
    for metric in metrics:
        if metric.value is None or CI_KEY in metric.details or NO_INTERVAL_KEY in metric.details:
            continue
        per_image = metric.details.get("per_image")
        if per_image is not None and len(per_image) == indices.shape[1]:
            set_interval(metric, mean_replicates(per_image, indices), level)
        else:
            metric.details[NO_INTERVAL_KEY] = "no per-image decomposition to resample"
        if is_identification(metric):
            n = len(metric.details["per_image"])
            metric.details["p_value"] = binomial_p_value(int(round(metric.value * n)), n, metric.chance)
            metric.details["p_value_test"] = f"exact one-sided binomial, {n} images, chance {metric.chance:.4g}"
