"""Release-parity switches and metrics against the formulas of spec §8, on small arrays."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from datasets import normalisation_options
from datasets.bold5000 import load_bold5000
from datasets.god import load_god, statistics_for_test
from datasets.simulate import BOLD_DIR, GOD_DIR
from evaluation import metrics as M
from evaluation.perceptual import FIDInception64, LPIPSAlex, load_fid_inception64, load_lpips_alex, lpips_or_reason
from evaluation.release_metrics import fid_per_sample, stack_ssim, stack_ssim_value
from models.alignment import AlignmentHeads
from utils.errors import CheckpointError, ConfigError


def test_god_release_test_normalisation_formula():
    """tr = normalize(tr); tt = normalize(tt, mean(tr), std(tr)) — statistics of the normalised train."""
    train = np.array([[1.0, 3.0], [5.0, 7.0]])
    mean, std = train.mean(), train.std()                     # 4, sqrt(5)
    normalised = ((train - mean) / std).astype(np.float32)
    assert statistics_for_test(normalised, mean, std, "train") == (mean, std)
    m2, s2 = statistics_for_test(normalised, mean, std, "release")
    assert m2 == pytest.approx(0.0, abs=1e-7) and s2 == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ConfigError, match="test_normalisation"):
        statistics_for_test(normalised, mean, std, "test")


def test_god_loader_release_mode_leaves_test_in_raw_units(sim_root):
    paper = load_god(sim_root / GOD_DIR, "sbj_1")
    release = load_god(sim_root / GOD_DIR, "sbj_1", test_normalisation="release")
    assert np.array_equal(paper.train_fmri, release.train_fmri)
    m2, s2 = release.source["test_mean"], release.source["test_std"]
    raw_test = paper.test_fmri.astype(np.float64) * paper.norm_std + paper.norm_mean  # back to raw units
    assert release.test_fmri == pytest.approx((raw_test - m2) / s2, abs=1e-3)
    assert release.test_fmri_repeats.mean(0) == pytest.approx(
        (paper.test_fmri_repeats.astype(np.float64) * paper.norm_std + paper.norm_mean - m2).mean(0) / s2, abs=1e-3)


def test_bold_stats_from_all_uses_every_trial(sim_root):
    both = load_bold5000(sim_root / BOLD_DIR, "CSI1", stats_from="all")
    train = load_bold5000(sim_root / BOLD_DIR, "CSI1")
    raw_all = np.concatenate([train.train_fmri * train.norm_std + train.norm_mean,
                              train.test_fmri_repeats * train.norm_std + train.norm_mean])
    assert both.norm_mean == pytest.approx(raw_all.mean(), rel=1e-4)
    assert both.norm_std == pytest.approx(raw_all.std(), rel=1e-4)
    assert normalisation_options("BOLD5000", stats_from="all") == {"stats_from": "all"}
    with pytest.raises(ConfigError, match="stats_from"):
        normalisation_options("GOD", stats_from="all")
    with pytest.raises(ConfigError, match="test_normalisation"):
        normalisation_options("BOLD5000", test_normalisation="release")


def test_restandardize_unbiased_like_torch_std():
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    heads = AlignmentHeads(restandardize=True, restandardize_std="unbiased").fit(x, y)
    test = torch.randn(4, 3, dtype=torch.float64)
    pred = heads.decoder.predict(test)
    expected = (pred - pred.mean(0)) / pred.std(0) * y.std(0) + y.mean(0)  # torch.std: ddof 1 both sides
    assert heads.decode(test) == pytest.approx(expected)
    heads.restandardize_std = "population"
    population = (pred - pred.mean(0)) / pred.std(0, unbiased=False) * y.std(0, unbiased=False) + y.mean(0)
    assert heads.decode(test) == pytest.approx(population)
    with pytest.raises(ConfigError, match="restandardize_std"):
        AlignmentHeads(restandardize_std="ddof2")


def _skimage_like_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """skimage's algorithm on a 3-D stack per channel: uniform filter, sample covariance, crop 3."""
    win, pad = 7, 3
    cn = win ** 3 / (win ** 3 - 1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch], b[..., ch]
        mx, my = uniform_filter(x, win), uniform_filter(y, win)
        vx = cn * (uniform_filter(x * x, win) - mx * mx)
        vy = cn * (uniform_filter(y * y, win) - my * my)
        vxy = cn * (uniform_filter(x * y, win) - mx * my)
        s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        out.append(s[pad:-pad, pad:-pad, pad:-pad].mean())
    return float(np.mean(out))


def test_stack_ssim_matches_the_skimage_algorithm():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (8, 10, 9, 3)).astype(np.float64)
    recon = np.clip(gt + rng.normal(0, 40, gt.shape), 0, 255)
    assert stack_ssim_value(gt, recon) == pytest.approx(_skimage_like_ssim(recon, gt), rel=1e-9)
    assert stack_ssim_value(gt, gt) == pytest.approx(1.0)
    metric = stack_ssim(gt.astype(np.uint8), np.stack([recon, gt], 1).astype(np.uint8))
    assert metric.details["max_over_samples"] == pytest.approx(1.0) and metric.details["ci_skipped"]
    assert stack_ssim(gt[:3].astype(np.uint8), gt[:3].astype(np.uint8)).skipped


def test_snr_identification_by_hand():
    gt = np.zeros((2, 7, 7, 3), dtype=np.uint8)
    gt[0] = 100
    gt[1] = 10
    recon = gt.copy()
    recon[0] = 90  # own: 10 log10(100^2 / 10^2) = 20 dB; against gt[1]: 10 log10(10^2 / 80^2) < 0
    scores = M._snr_scores(gt.reshape(2, -1).astype(float), recon.reshape(2, 1, -1).astype(float))
    assert scores[0, 0, 0] == pytest.approx(20.0) and scores[0, 0, 1] == pytest.approx(10 * np.log10(1 / 64))
    assert M.pairwise_identification(gt, recon, "snr").value == 1.0


def _random_state(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {prefix + k: (torch.rand(v.shape, generator=gen) + 0.5 if "var" in k else torch.randn(v.shape, generator=gen))
            for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


def test_fid_from_a_local_weight_file(tmp_path):
    """Synthetic weights with the FID Inception file's key names: the code path, not the published numbers."""
    path = tmp_path / "pt_inception.pth"
    torch.save({f"{name}.{k}": v for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3")
                for k, v in _random_state(getattr(FIDInception64(), name)).items()}, path)
    net = load_fid_inception64(path)
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    recon = np.stack([gt, rng.integers(0, 256, gt.shape, dtype=np.uint8)], axis=1)  # sample 0 = ground truth
    metric = fid_per_sample(gt, recon, net)
    assert metric.details["per_sample"][0] == pytest.approx(0.0, abs=1e-3) and metric.details["per_sample"][1] > 0
    assert net(torch.rand(2, 3, 40, 40)).shape == (2, 64)
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="Conv2d_1a_3x3.conv.weight"):
        load_fid_inception64(tmp_path / "bad.pth")


def test_lpips_from_local_weight_files(tmp_path):
    net = LPIPSAlex()
    alex, lin = tmp_path / "alexnet.pth", tmp_path / "alex.pth"
    torch.save(_random_state(net.features, "features."), alex)
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))},
               lin)
    loaded = load_lpips_alex(alex, lin)
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    assert loaded(a, a) == pytest.approx(torch.zeros(2), abs=1e-6)
    assert (loaded(a, b) > 0).all()
    distance, reason = lpips_or_reason(f"{alex},{lin}")
    assert reason is None and M.lpips_identification((a.numpy()), (a.numpy()), distance).value == 1.0
    assert lpips_or_reason(None)[0] is None
    with pytest.raises(CheckpointError, match="ALEXNET,LINEAR"):
        lpips_or_reason(str(alex))


def test_parity_options_in_the_config():
    from utils.config import load_config

    cfg = load_config("configs/demo/LEA_GOD.yaml", ["Data.test_normalisation=release", "Eval.bootstrap=10"], kind="lea")
    assert cfg.data.test_normalisation == "release" and cfg.eval.bootstrap == 10
    assert cfg.align.restandardize_std == "unbiased"
    with pytest.raises(ConfigError, match="Data.stats_from"):
        load_config("configs/demo/LEA_GOD.yaml", ["Data.stats_from=all"], kind="lea")
    with pytest.raises(ConfigError, match="Data.test_normalisation"):
        load_config("configs/demo/LEA_BOLD.yaml", ["Data.test_normalisation=release"], kind="lea")
    with pytest.raises(ConfigError, match="baseline_alphas"):
        load_config("configs/demo/LEA_GOD.yaml", ["Eval.baseline_alphas=[0]"], kind="lea")
