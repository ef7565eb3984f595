"""Noise ceiling from repeats, bootstrap intervals, binomial p-values, ridge baselines."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from datasets.god import load_god
from datasets.simulate import GOD_DIR, simulate
from evaluation import metrics as M
from evaluation.baselines import VoxelwiseRidge
from evaluation.ceiling import (explainable_fraction, fraction_of_ceiling, group_ceiling, repeat_stats,
                                voxel_ceiling)
from evaluation.uncertainty import (attach_uncertainty, binomial_p_value, bootstrap_indices, mean_replicates,
                                    percentile_interval)
from utils.errors import DataError

CEILING_TOLERANCE = 0.03


def test_repeat_stats_and_ceiling_by_hand():
    # 3 images x 2 repeats, 1 voxel: averages 1, 3, 5 (var 4), within-image deviations +-1 (noise var 2)
    trials = np.array([[0.0], [2.0], [2.0], [4.0], [4.0], [6.0]])
    index = np.array([0, 0, 1, 1, 2, 2])
    stats = repeat_stats(trials, index)
    assert stats.means[:, 0] == pytest.approx([1, 3, 5])
    assert stats.within_ss[:, 0] == pytest.approx([2, 2, 2]) and list(stats.counts) == [2, 2, 2]
    # noise var = 6 / 3 = 2; noise of the average = 2 / 2 = 1; var_avg = 4; correction (N-3)/(N-1) = 0
    assert explainable_fraction(stats)[0] == pytest.approx(1.0)
    five = repeat_stats(np.concatenate([trials, [[8.0], [10.0], [10.0], [12.0]]]),
                        np.concatenate([index, [3, 3, 4, 4]]))
    # averages 1,3,5,9,11: var_avg 68.8 / 4 = 17.2; noise of the average 1; correction 2/4
    assert explainable_fraction(five)[0] == pytest.approx(1 - 0.5 / 17.2)
    assert voxel_ceiling(five)[0] == pytest.approx(np.sqrt(1 - 0.5 / 17.2))
    assert group_ceiling(np.array([0.25, 0.49, np.nan])) == pytest.approx(np.sqrt(0.37))
    assert fraction_of_ceiling(np.array([0.3, 0.3]), np.array([0.36, 0.36])) == pytest.approx(0.5)
    with pytest.raises(DataError, match="at least 2 trials"):
        repeat_stats(trials[:5], index[:5])


def test_ceiling_estimate_matches_the_simulator(tmp_path):
    """Demo-scale GOD (25 images x 5 repeats): estimated ceiling within 0.03 of the true one."""
    root = simulate(tmp_path / "sim", scale="demo", seed=3, progress=False)
    for subject in ("sbj_1", "sbj_2"):
        data = load_god(root / GOD_DIR, subject)
        with np.load(root / "ground_truth" / "GOD" / f"{subject}.npz") as truth:
            clean = truth["test_clean"][:, truth["loader_columns"]]
        true_ceiling = np.nanmean(M.voxelwise_pearson(clean, data.test_fmri))  # noise-free vs measured average
        stats = repeat_stats(data.test_fmri_repeats, data.test_repeat_index)
        estimate = group_ceiling(explainable_fraction(stats))
        assert abs(estimate - true_ceiling) < CEILING_TOLERANCE, (subject, estimate, true_ceiling)


def test_percentile_interval_and_mean_replicates_by_hand():
    assert percentile_interval(np.arange(101.0), level=0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval([np.nan]) is None
    idx = np.array([[0, 0, 1], [2, 2, 2]])
    assert mean_replicates([1.0, 2.0, 4.0], idx) == pytest.approx([4 / 3, 4.0])
    assert bootstrap_indices(5, 3, seed=1).shape == (3, 5)
    assert (bootstrap_indices(5, 3, seed=1) == bootstrap_indices(5, 3, seed=1)).all()


def test_binomial_p_value_by_hand():
    assert binomial_p_value(2, 2, 0.5) == pytest.approx(0.25)
    assert binomial_p_value(0, 4, 0.5) == pytest.approx(1.0)
    assert binomial_p_value(3, 3, 0.1) == pytest.approx(0.001)
    metric = M.Metric("top1", 2 / 3, 0.5, details={"per_image": [1.0, 1.0, 0.0]})
    attach_uncertainty([metric], bootstrap_indices(3, 50, seed=0))
    assert metric.details["p_value"] == pytest.approx(0.5)  # P(X >= 2), X ~ Bin(3, 0.5)
    assert metric.details["ci95"][0] <= 2 / 3 <= metric.details["ci95"][1]
    fid = M.Metric("fid", 3.0, None)
    attach_uncertainty([fid], bootstrap_indices(3, 5))
    assert "ci95" not in fid.details and fid.details["ci_skipped"]


def test_bootstrap_coverage_by_simulation():
    """Percentile intervals of a mean of 50 per-image rates cover the true mean about 95% of the time."""
    rng = np.random.default_rng(0)
    n, experiments, true_p = 50, 400, 0.7
    covered = 0
    for e in range(experiments):
        per_image = rng.binomial(1, true_p, n).astype(float)
        low, high = percentile_interval(mean_replicates(per_image, bootstrap_indices(n, 400, seed=e)))
        covered += low <= true_p <= high
    assert 0.90 <= covered / experiments <= 0.98


def test_voxelwise_ridge_recovers_weights_and_picks_alphas():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    w = rng.normal(size=(5, 3))
    y = x @ w + 2.0 + rng.normal(scale=0.01, size=(200, 3))
    y[:, 2] = 2.0 + rng.normal(size=200)  # the last target is pure noise: the large alpha wins
    ridge = VoxelwiseRidge(alphas=(1e-3, 1e5), folds=4).fit(x, y)
    assert ridge.weight[:, :2] == pytest.approx(w[:, :2], abs=0.01)
    assert ridge.intercept[:2] == pytest.approx([2.0, 2.0], abs=0.01)
    assert list(ridge.alpha_per_target) == [1e-3, 1e-3, 1e5]
    # closed form of one alpha: (Xc'Xc + a I)^-1 Xc'Yc
    one = VoxelwiseRidge(alphas=(10.0,), folds=2).fit(x, y)
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert one.weight == pytest.approx(np.linalg.solve(xc.T @ xc + 10 * np.eye(5), xc.T @ yc))
    assert one.predict(x[:2]) == pytest.approx(x[:2] @ one.weight + one.intercept)


def test_per_sample_and_best_sample():
    rates = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # [N=3, S=2]
    metric = M._rate_metric("x", rates, 0.5)
    assert metric.details["per_sample"] == pytest.approx([2 / 3, 1 / 3])
    assert metric.details["sd_over_samples"] == pytest.approx(1 / 6)
    best = M.best_sample(metric)
    assert best.value == pytest.approx(2 / 3) and best.details["sample_index"] == 0
    assert M.best_sample(M._rate_metric("y", rates[:, :1], 0.5)).skipped


def test_binomial_matches_scipy_tail():
    assert binomial_p_value(7, 20, 0.2) == pytest.approx(sps.binom.sf(6, 20, 0.2))
