"""fMRI autoencoder: shapes, voxel-group routing, encoder / decoder separation, init, autocast."""
from __future__ import annotations

import math

import pytest
import torch

from models.fmri_autoencoder import FMRIAutoencoder, FMRIAutoencoderConfig
from models.layers import multi_head_attention, sincos_positions_1d
from utils.errors import ConfigError, DataError

ROI_PATCH = (7, 5, 9)


def tiny_config(**overrides) -> FMRIAutoencoderConfig:
    kwargs = dict(roi_patch=ROI_PATCH, patch_size=4, embed_dim=32, encoder_depth=2, num_heads=4,
                  decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, latent_dim=24)
    kwargs.update(overrides)
    return FMRIAutoencoderConfig(**kwargs)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return FMRIAutoencoder(tiny_config()).eval()


def test_config_properties():
    c = tiny_config()
    assert c.num_voxels == sum(ROI_PATCH)
    assert c.num_tokens == len(ROI_PATCH) * 4


def test_shapes_and_input_forms(model):
    fmri = torch.randn(3, 1, 21)
    latent, rec = model(fmri)
    assert latent.shape == (3, 1, 24) and rec.shape == (3, 1, 21)
    torch.testing.assert_close(model.encode(fmri[:, 0]), latent)
    torch.testing.assert_close(model.decode(latent[:, 0]), rec)
    torch.testing.assert_close(model.decode(latent), rec)


@pytest.mark.parametrize("shape", [(2, 20), (2, 2, 21), (21,)])
def test_bad_fmri_shape_is_a_clear_error(model, shape):
    with pytest.raises(DataError, match="21"):
        model.encode(torch.randn(shape))


def test_bad_latent_shape_is_a_clear_error(model):
    with pytest.raises(DataError, match="24"):
        model.decode(torch.randn(2, 23))


def test_encoder_does_not_use_decoder_weights(model):
    fmri = torch.randn(2, 21)
    latent = model.encode(fmri)
    with torch.no_grad():
        for p in (list(model.decoder_blocks.parameters()) + list(model.channel_mapper.parameters())
                  + [model.mask_token, model.decoder_embed.weight]):
            p.add_(1.0)
    torch.testing.assert_close(model.encode(fmri), latent)


def test_roi_groups_become_their_own_tokens(model):
    """Voxels of group 1 only change the patch_size tokens of group 1."""
    fmri = torch.randn(1, 1, 21)
    changed = fmri.clone()
    changed[..., 7:12] += 1.0  # group 1 = voxels 7..11
    a, b = model.patch_embed(fmri), model.patch_embed(changed)  # [1, 12, C]
    moved = (a - b).abs().amax(-1)[0]  # [12]
    assert torch.all(moved[4:8] > 0)
    assert torch.all(moved[:4] == 0) and torch.all(moved[8:] == 0)


def test_decoder_writes_groups_in_roi_order(model):
    """Silencing channel_mapper.1 (and the shared conv's bias) zeroes exactly voxels 7..11."""
    with torch.no_grad():
        model.channel_mapper[1][0].weight.zero_()
        model.channel_mapper[1][0].bias.zero_()
        model.decoder_pred.bias.zero_()
    rec = model.decode(torch.randn(2, 24))[:, 0]  # [2, 21]
    assert torch.all(rec[:, 7:12] == 0)
    assert torch.all(rec[:, :7] != 0) and torch.all(rec[:, 12:] != 0)


def test_sincos_positions():
    table = sincos_positions_1d(6, 8)[0]  # [7, 8]
    assert table.shape == (7, 8)
    assert torch.all(table[0] == 0)
    p, k = 3, 1
    w = 1.0 / 10000 ** (2 * k / 8)
    assert table[1 + p, k].item() == pytest.approx(math.sin(p * w), abs=1e-6)
    assert table[1 + p, 4 + k].item() == pytest.approx(math.cos(p * w), abs=1e-6)


def test_initialisation(model):
    c = model.config
    torch.testing.assert_close(model.pos_embed, sincos_positions_1d(c.num_tokens, c.embed_dim))
    torch.testing.assert_close(model.decoder_pos_embed, sincos_positions_1d(c.num_tokens, c.decoder_embed_dim))
    assert torch.all(model.pred.bias == 0) and torch.all(model.blocks[0].attn.qkv.bias == 0)
    assert torch.all(model.norm.weight == 1) and torch.all(model.norm.bias == 0)
    bound = math.sqrt(6 / (c.embed_dim + c.latent_dim))  # xavier-uniform
    assert model.pred.weight.abs().max() <= bound
    big = FMRIAutoencoder(tiny_config(patch_size=64, embed_dim=256))
    assert big.patch_embed.layers[0][0].weight.std().item() == pytest.approx(0.02, rel=0.25)
    assert big.cls_token.std().item() == pytest.approx(0.02, rel=0.25)


def test_positions_are_fixed_and_saved(model):
    names = {n for n, _ in model.named_parameters()}
    assert "pos_embed" not in names and "decoder_pos_embed" not in names
    assert {"pos_embed", "decoder_pos_embed"} <= set(model.state_dict())


def test_gradients_reach_encoder_and_decoder(model):
    model.train()
    latent, rec = model(torch.randn(2, 21))
    (latent.square().mean() + rec.square().mean()).backward()
    assert model.patch_embed.layers[2][0].weight.grad.abs().sum() > 0
    assert model.channel_mapper[2][0].weight.grad.abs().sum() > 0


def test_bf16_autocast(model):
    fmri = torch.randn(2, 21)
    latent, rec = model(fmri)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        latent_bf, rec_bf = model(fmri)
    assert latent_bf.dtype == torch.bfloat16
    torch.testing.assert_close(latent_bf.float(), latent, atol=0.1, rtol=0.1)
    torch.testing.assert_close(rec_bf.float(), rec, atol=0.1, rtol=0.1)


def test_attention_helper_matches_explicit_softmax():
    torch.manual_seed(1)
    q, k, v = torch.randn(3, 2, 5, 8).unbind(0)  # each [B=2, N=5, C=8]
    heads = 2
    split = [t.reshape(2, 5, heads, 4).transpose(1, 2) for t in (q, k, v)]  # [B, H, N, C/H]
    weights = (split[0] @ split[1].transpose(-1, -2) / 2.0).softmax(-1)  # scale 1/sqrt(4)
    expected = (weights @ split[2]).transpose(1, 2).reshape(2, 5, 8)
    torch.testing.assert_close(multi_head_attention(q, k, v, heads), expected)


def test_release_config_checks_voxel_count():
    release = {"Data": {"patch_size": 4, "roi_patch": [3, 4], "num_voxel": 8},
               "Model": {"embed_dim": 16, "encoder_depth": 1, "decoder_embed_dim": 8,
                         "decoder_depth": 1, "num_heads": 2, "drop_rate": 0.0}}
    with pytest.raises(ConfigError, match="num_voxel"):
        FMRIAutoencoderConfig.from_release_config(release)
    del release["Model"]["num_heads"]
    with pytest.raises(ConfigError, match="num_heads"):
        FMRIAutoencoderConfig.from_release_config(release)


def test_bad_widths_are_config_errors():
    with pytest.raises(ConfigError, match="embed_dim"):
        tiny_config(embed_dim=30)
    with pytest.raises(ConfigError, match="roi_patch"):
        tiny_config(roi_patch=(10, 0))
    with pytest.raises(ConfigError, match="read from the data"):
        FMRIAutoencoder(tiny_config(roi_patch=()))  # a config may wait for the data; a model may not
