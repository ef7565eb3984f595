"""The tokenizer's SSIM term: what it measures, how it enters the loss, how it is configured."""
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.metrics import ssim_scores
from models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from models.vqgan import VQGAN
from training.stage_tokenizer import TokenizerTrainModule, ssim_index
from utils.config import load_config
from utils.errors import ConfigError

TOKENIZER_YAML = Path(__file__).resolve().parents[2] / "configs" / "demo" / "tokenizer.yaml"
SIZE = 32


def square_on_background(level: float, background: float = 0.6) -> torch.Tensor:
    """`[1, 3, SIZE, SIZE]`: a grey background with a 12-pixel square of another grey level."""
    image = torch.full((1, 3, SIZE, SIZE), background)
    image[..., 10:22, 10:22] = level
    return image


def test_ssim_index_is_one_for_identical_images_and_lower_otherwise():
    image = torch.rand(2, 3, SIZE, SIZE)
    assert ssim_index(image, image).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim_index(image, image.flip(-1)).item() < 0.5


def test_a_faint_object_weighs_about_as_much_as_a_strong_one_unlike_the_pixel_loss():
    """Losing a square of contrast 0.1 costs 1/16 of losing one of contrast 0.4 in L2, while the
    SSIM term counts the lost structure at a similar weight: the reason the term exists."""
    flat = square_on_background(0.6)
    faint, strong = square_on_background(0.7), square_on_background(1.0)
    l2 = [((flat - x) ** 2).mean().item() for x in (faint, strong)]
    dssim = [1 - ssim_index(flat, x).item() for x in (faint, strong)]
    assert l2[0] / l2[1] == pytest.approx(1 / 16)
    assert dssim[0] / dssim[1] > 0.5


def test_ssim_index_agrees_with_the_ssim_metric():
    """Same windows and constants as evaluation/metrics.py; the metric's sample covariance (49/48)
    is the only difference."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(2, SIZE, SIZE, 3))
    b = np.clip(a + rng.normal(scale=50, size=a.shape), 0, 255).round()
    a, b = a.astype(np.uint8), b.astype(np.uint8)
    metric = ssim_scores(a, b[:, None])                        # [N, 1, N]
    for i in range(2):
        as_tensor = [torch.from_numpy(x[i:i + 1] / 255).permute(0, 3, 1, 2).float() for x in (a, b)]
        assert ssim_index(*as_tensor).item() == pytest.approx(metric[i, 0, i], abs=0.01)


def tiny_module(ssim_weight: float) -> TokenizerTrainModule:
    cfg = load_config(TOKENIZER_YAML, [f"Loss.ssim_weight={ssim_weight}", f"Model.resolution={SIZE}",
                                       "Model.ch_base=8", "Model.ch_mult=[1,2]", "Model.num_codebook=16",
                                       "Model.dim_codebook=8", "Model.ch_latent=8", f"Data.image_size={SIZE}"])
    torch.manual_seed(0)
    vqgan = VQGAN(cfg.model)
    disc = PatchDiscriminator(PatchDiscriminatorConfig(in_ch=3, channels=8, n_layers=1))
    return TokenizerTrainModule(vqgan, disc, cfg)


def test_the_ssim_term_enters_the_loss_with_its_weight_and_is_logged_when_off():
    batch = {"image": torch.rand(2, 3, SIZE, SIZE)}
    off, on = tiny_module(0.0), tiny_module(0.5)
    on.load_state_dict(off.state_dict())
    loss_off, logs_off = off(batch, step=0)
    loss_on, logs_on = on(batch, step=0)
    assert logs_off["ssim_index"].item() == pytest.approx(logs_on["ssim_index"].item())
    assert 0 < logs_off["ssim_index"].item() < 1
    assert (loss_on - loss_off).item() == pytest.approx(0.5 * (1 - logs_on["ssim_index"].item()), rel=1e-4)
    loss_on.backward()
    assert on.vqgan.decoder.conv_out.weight.grad.abs().sum() > 0


def test_a_negative_ssim_weight_is_refused():
    with pytest.raises(ConfigError, match="Loss.ssim_weight expected >= 0, found -1"):
        load_config(TOKENIZER_YAML, ["Loss.ssim_weight=-1"])
