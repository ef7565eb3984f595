"""Precision policy and the attention kernels.

Quality guard: under bf16 autocast, logits of a small MaskGIT and latents / reconstructions of a small
fMRI autoencoder stay within REL_TOL (relative L2 error) of float32, and MaskGIT's arg-max token agrees
with float32 at >= TOP1_AGREEMENT of the positions. bf16 keeps 8 mantissa bits (relative rounding
2^-9 ~ 2e-3 per value); a few layers of accumulated rounding stay well below 2e-2, while a broken cast
(wrong dtype path, overflow, a dropped bias) gives errors of order 1.
"""
from __future__ import annotations

import contextlib

import pytest
import torch

import utils.precision as precision
from models.fmri_autoencoder import FMRIAutoencoder, FMRIAutoencoderConfig
from models.layers import (attention_implementation, get_attention_implementation, math_attention,
                           multi_head_attention, to_autocast_dtype)
from models.maskgit import MaskGITConfig, MaskGITTransformer
from utils.errors import ConfigError

REL_TOL = 2e-2
TOP1_AGREEMENT = 0.95
CPU = torch.device("cpu")


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.float() - ref).norm() / ref.norm()).item()


@pytest.fixture
def maskgit():
    torch.manual_seed(0)
    config = MaskGITConfig(num_codebook=64, token_grid=6, embed_dim=64, depth=3, num_heads=4, drop_rate=0.0,
                           condition_dim=32, extra_tokens=3)
    return MaskGITTransformer(config).eval()


@pytest.fixture
def fmri_ae():
    torch.manual_seed(0)
    config = FMRIAutoencoderConfig(roi_patch=(40, 30, 50), patch_size=4, embed_dim=64, encoder_depth=3,
                                   num_heads=4, decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4,
                                   latent_dim=48)
    return FMRIAutoencoder(config).eval()


# ---------------------------------------------------------------- resolve_precision / autocast

def test_explicit_precisions_pass_through():
    assert precision.resolve_precision("fp32", "cpu") is None
    assert precision.resolve_precision("bf16", CPU) is torch.bfloat16
    assert precision.resolve_precision("bf16", "cuda") is torch.bfloat16


def test_auto_on_cpu_follows_native_bf16_support(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto", "cpu") is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto", "cpu") is None


def test_auto_on_cuda_follows_compute_capability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert precision.resolve_precision("auto", "cuda") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert precision.resolve_precision("auto", "cuda") is None


def test_auto_elsewhere_is_fp32():
    assert precision.resolve_precision("auto", "meta") is None


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="precision.*'fp16'"):
        precision.resolve_precision("fp16", "cpu")


def test_cpu_detection_falls_back_to_cpuinfo_flags(monkeypatch, tmp_path):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    info = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "CPUINFO", info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw\n")
    assert not precision.cpu_has_native_bf16()
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert precision.cpu_has_native_bf16()
    info.unlink()
    assert not precision.cpu_has_native_bf16()


def test_autocast_is_a_no_op_for_fp32():
    assert isinstance(precision.autocast(CPU, None), contextlib.nullcontext)
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with precision.autocast(CPU, None):
        assert (a @ b).dtype == torch.float32
    with precision.autocast(CPU, torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
    assert precision.precision_name(None) == "fp32" and precision.precision_name(torch.bfloat16) == "bf16"


def test_to_autocast_dtype_casts_only_under_autocast():
    x = torch.randn(3, 4)
    assert to_autocast_dtype(x) is x
    with precision.autocast(CPU, torch.bfloat16):
        assert to_autocast_dtype(x).dtype == torch.bfloat16
        assert to_autocast_dtype(torch.ones(2, dtype=torch.long)).dtype == torch.long
    meta = torch.empty(2, device="meta")
    assert to_autocast_dtype(meta) is meta  # no autocast on meta: unchanged, no error


# ---------------------------------------------------------------- bf16 quality guard

def test_maskgit_bf16_logits_stay_close_to_fp32(maskgit):
    torch.manual_seed(1)
    ids = torch.randint(0, 64, (8, 36))
    ids[:, ::2] = maskgit.mask_token_id
    cond = torch.randn(8, 32)
    with torch.inference_mode():
        ref = maskgit(ids, cond)
        with precision.autocast(CPU, torch.bfloat16):
            low = maskgit(ids, cond)
    assert low.dtype == torch.bfloat16  # autocast did act
    assert rel_err(low, ref) < REL_TOL
    assert (low.float().argmax(-1) == ref.argmax(-1)).float().mean() > TOP1_AGREEMENT


def test_fmri_autoencoder_bf16_stays_close_to_fp32(fmri_ae):
    torch.manual_seed(2)
    fmri = torch.randn(6, fmri_ae.config.num_voxels)
    with torch.inference_mode():
        latent, recon = fmri_ae(fmri)
        with precision.autocast(CPU, torch.bfloat16):
            latent_low, recon_low = fmri_ae(fmri)
    assert latent_low.dtype == torch.bfloat16
    assert rel_err(latent_low, latent) < REL_TOL
    assert rel_err(recon_low, recon) < REL_TOL


# ---------------------------------------------------------------- attention kernels

def test_math_attention_equals_sdpa_in_fp32():
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 17, 32) for _ in range(3))
    sdpa = multi_head_attention(q, k, v, num_heads=4)
    with attention_implementation("math"):
        assert get_attention_implementation() == "math"
        written_out = multi_head_attention(q, k, v, num_heads=4)
    assert get_attention_implementation() == "sdpa"
    torch.testing.assert_close(written_out, sdpa, atol=1e-5, rtol=1e-5)
    heads = q.reshape(2, 17, 4, 8).transpose(1, 2)  # [B, H, N, d]
    manual = (heads @ heads.transpose(-2, -1) / 8 ** 0.5).softmax(-1) @ heads
    torch.testing.assert_close(math_attention(heads, heads, heads), manual)


def test_models_agree_across_attention_kernels(maskgit, fmri_ae):
    ids = torch.randint(0, 64, (2, 36))
    cond = torch.randn(2, 32)
    fmri = torch.randn(2, fmri_ae.config.num_voxels)
    with torch.inference_mode():
        logits, (latent, recon) = maskgit(ids, cond), fmri_ae(fmri)
        with attention_implementation("math"):
            logits_m, (latent_m, recon_m) = maskgit(ids, cond), fmri_ae(fmri)
    for a, b in ((logits_m, logits), (latent_m, latent), (recon_m, recon)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_vit_blocks_are_timm_blocks_following_the_kernel_switch(fmri_ae):
    from timm.models.vision_transformer import Block

    block = fmri_ae.blocks[0]
    assert isinstance(block, Block) and block.attn.fused_attn
    with attention_implementation("math"):
        assert not block.attn.fused_attn
    assert block.attn.fused_attn


def test_unknown_attention_kernel_is_refused_and_restored():
    with pytest.raises(ValueError, match="flash"):
        with attention_implementation("flash"):
            pass
    assert get_attention_implementation() == "sdpa"
