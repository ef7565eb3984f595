"""MaskGIT condition augmentation: shrink, noise and drop, each on its own and all off."""
import pytest
import torch

from training.stage_maskgit import augment_condition
from utils.config import MaskGITLossConfig, config_from_dict
from utils.errors import ConfigError

D = 32
B = 4000


@pytest.fixture
def cond():
    torch.manual_seed(0)
    return torch.randn(B, D) * 0.5 + 2.0


def stats(cond):
    return cond.mean(0), cond.std(0)


def test_all_off_is_identity(cond):
    assert torch.equal(augment_condition(cond, *stats(cond), MaskGITLossConfig()), cond)


def test_drop_replaces_whole_rows_by_the_null_condition(cond):
    out = augment_condition(cond, *stats(cond), MaskGITLossConfig(condition_drop=0.3),
                            generator=torch.Generator().manual_seed(1))
    zero = (out == 0).all(1)
    assert 0.25 < zero.float().mean() < 0.35
    assert torch.equal(out[~zero], cond[~zero])


def test_shrink_pulls_rows_towards_the_mean(cond):
    mean, std = stats(cond)
    out = augment_condition(cond, mean, std, MaskGITLossConfig(condition_shrink=0.5),
                            generator=torch.Generator().manual_seed(1))
    ratio = ((out - mean).norm(dim=1) / (cond - mean).norm(dim=1))  # [B], one factor per row
    assert ratio.min() >= 0.5 - 1e-5 and ratio.max() <= 1 + 1e-5 and ratio.std() > 0.1
    torch.testing.assert_close(out - mean, (cond - mean) * ratio[:, None])


def test_noise_scales_with_the_feature_std(cond):
    mean, std = stats(cond)
    out = augment_condition(cond, mean, std, MaskGITLossConfig(condition_noise=1.0),
                            generator=torch.Generator().manual_seed(1))
    noise = (out - cond) / std  # levels U(0, 1) times N(0, 1): variance 1/3
    assert noise.var().item() == pytest.approx(1 / 3, rel=0.05)


def test_bad_augmentation_and_guidance_values_are_refused():
    with pytest.raises(ConfigError, match="condition_drop"):
        config_from_dict({"KIND": "maskgit", "Loss": {"condition_drop": 1.0}})
    with pytest.raises(ConfigError, match="guidance_scale"):
        config_from_dict({"KIND": "lea", "Sampling": {"guidance_scale": -1}})


def test_results_report_how_maskgit_was_trained(tmp_path):
    from models.lea import maskgit_condition_recipe

    torch.save({"model": {}, "config": {"Loss": {"condition_drop": 0.1, "condition_noise": 0.7},
                                        "Model": {"condition": "adaln"}}}, tmp_path / "a.pt")
    torch.save({"model": {}, "config": {"Loss": {"label_smoothing": 0.1}}}, tmp_path / "old.pt")
    on = maskgit_condition_recipe(tmp_path / "a.pt")
    assert on["condition_drop"] == 0.1 and on["condition_noise"] == 0.7 and on["condition_shrink"] == 0.0
    assert "on" in on["note"] and on["condition_path"] == "adaln"
    old = maskgit_condition_recipe(tmp_path / "old.pt")
    assert old["note"].startswith("off") and old["condition_path"] == "prefix"
