"""VQGAN tokenizer: shapes, nearest-code quantisation, MaskGIT's residual shortcut, straight-through."""
from __future__ import annotations

import pytest
import torch

from models.vqgan import NUM_GROUPS, VQGAN, ResBlock, VQGANConfig
from utils.errors import ConfigError, DataError


def tiny_config(**overrides) -> VQGANConfig:
    kwargs = dict(resolution=32, ch_base=32, ch_mult=(1, 2, 2), num_res_blocks=1, num_res_mids=1,
                  ch_latent=16, num_codebook=20, dim_codebook=16)
    kwargs.update(overrides)
    return VQGANConfig(**kwargs)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return VQGAN(tiny_config()).eval()


def test_paper_config_grid():
    c = VQGANConfig()
    assert c.downsample_factor == 16 and c.token_grid == 16
    assert c.norm_groups == 32  # the release's GroupNorm


def test_norm_groups_change_no_weight_name_or_shape():
    default, fewer = VQGAN(tiny_config()), VQGAN(tiny_config(norm_groups=8))
    assert {k: v.shape for k, v in default.state_dict().items()} == \
           {k: v.shape for k, v in fewer.state_dict().items()}
    fewer.load_state_dict(default.state_dict(), strict=True)
    groups = {m.num_groups for m in fewer.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {8}


def test_per_channel_groups_remove_each_channels_mean_and_fewer_groups_keep_it():
    """Why small demo tokenizers use fewer groups: one channel per group erases a channel's mean."""
    x = torch.randn(1, 32, 4, 4) + torch.arange(32.0)[None, :, None, None]
    per_channel = torch.nn.GroupNorm(32, 32, affine=False)(x)
    grouped = torch.nn.GroupNorm(8, 32, affine=False)(x)
    assert per_channel.mean(dim=(2, 3)).abs().max() < 1e-5
    assert grouped.mean(dim=(2, 3)).abs().max() > 0.5


@pytest.mark.parametrize("groups", [0, 5])
def test_norm_groups_must_divide_every_width(groups):
    with pytest.raises(ConfigError, match="norm_groups"):
        tiny_config(norm_groups=groups)


def test_shapes(model):
    image = torch.rand(2, 3, 32, 32)
    quant, indices = model.encode(image)
    assert quant.shape == (2, 16, 8, 8) and indices.shape == (2, 8, 8)
    assert indices.dtype == torch.long and 0 <= indices.min() and indices.max() < 20
    assert model.decode(quant).shape == (2, 3, 32, 32)


def test_quantiser_picks_the_nearest_code(model):
    z = model.encoder(torch.rand(2, 3, 32, 32))  # [2, 16, 8, 8]
    indices = model.quantizer.indices(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 16)
    expected = torch.cdist(flat, model.quantizer.embedding.weight).argmin(1).reshape(2, 8, 8)
    assert torch.equal(indices, expected)
    quant = model.quantizer.lookup(indices)
    torch.testing.assert_close(quant[1, :, 3, 4], model.quantizer.embedding.weight[indices[1, 3, 4]])


def test_decode_indices_accepts_grid_and_flat(model):
    quant, indices = model.encode(torch.rand(2, 3, 32, 32))
    expected = model.decode(quant)
    torch.testing.assert_close(model.decode_indices(indices), expected)
    torch.testing.assert_close(model.decode_indices(indices.flatten(1)), expected)
    with pytest.raises(DataError, match="square"):
        model.decode_indices(torch.zeros(2, 10, dtype=torch.long))


def test_bad_image_is_a_clear_error(model):
    with pytest.raises(DataError, match="multiples of 4"):
        model.encode(torch.rand(1, 3, 30, 32))
    with pytest.raises(DataError, match=r"\[B, 3, H, W\]"):
        model.encode(torch.rand(1, 1, 32, 32))


def test_residual_block_shortcut_quirk():
    """Width change: out = h + nin_shortcut(h), the input is not added; same width: out = x + h."""
    torch.manual_seed(0)
    x = torch.randn(2, 32, 4, 4)
    widen, keep = ResBlock(32, 64, NUM_GROUPS), ResBlock(32, 32, NUM_GROUPS)
    with torch.no_grad():
        widen.conv2.weight.zero_()
        keep.conv2.weight.zero_()
    assert torch.all(widen(x) == 0)
    torch.testing.assert_close(keep(x), x)
    with torch.no_grad():
        widen.nin_shortcut.weight.copy_(torch.eye(64)[:, :, None, None])
        widen.conv2.weight.normal_()
    h = widen.conv2(torch.nn.functional.silu(widen.norm2(widen.conv1(torch.nn.functional.silu(widen.norm1(x))))))
    torch.testing.assert_close(widen(x), 2 * h)


def test_forward_straight_through(model):
    model.train()
    image = torch.rand(2, 3, 32, 32)
    rec, codebook_loss, commitment_loss, indices = model(image)
    assert rec.shape == image.shape and indices.shape == (2, 8, 8)
    torch.testing.assert_close(codebook_loss, commitment_loss)
    with torch.no_grad():
        torch.testing.assert_close(rec, model.decode(model.quantizer.lookup(indices)))
    rec.mean().backward(retain_graph=True)
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.quantizer.embedding.weight.grad is None
    model.zero_grad()
    codebook_loss.backward()
    assert model.quantizer.embedding.weight.grad.abs().sum() > 0
    assert model.encoder.conv_in.weight.grad is None


def test_bf16_autocast(model):
    image = torch.rand(1, 3, 32, 32)
    quant, indices = model.encode(image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.decode(quant)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), model.decode(quant), atol=0.15, rtol=0.1)


def test_release_config_rejects_unsupported_options():
    release = {"Model": {"resolution": 32, "ch_base": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                         "num_res_mids": 1, "ch_latent": 32, "num_codebook": 64, "dim_codebook": 32,
                         "norm_mode": "gn", "use_spectral_norm": True}}
    with pytest.raises(ConfigError, match="use_spectral_norm"):
        VQGANConfig.from_release_config(release)
    release["Model"]["use_spectral_norm"] = False
    assert VQGANConfig.from_release_config(release).token_grid == 16


def test_inconsistent_codebook_width_is_refused():
    with pytest.raises(ConfigError, match="dim_codebook"):
        tiny_config(dim_codebook=8)
