"""Building blocks shared by the LEA networks.

- `sincos_positions_1d`: fixed 1-D sine-cosine position table (with an all-zero row for a CLS token).
- `multi_head_attention`: split heads, attend, merge heads. The kernel is chosen by
  `attention_implementation(...)`: 'sdpa' (`F.scaled_dot_product_attention`, the default) or 'math'
  (softmax(q k^T * scale) v written out, as the authors' release computes it; kept for comparisons).
- `to_autocast_dtype`: cast an activation once to the autocast compute dtype.
- `ViTBlock`: timm's pre-norm ViT `Block` at the settings the release uses (qkv bias, LayerNorm
  eps 1e-5), with an attention whose kernel follows `attention_implementation(...)`.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Attention
from timm.models.vision_transformer import Block

POSITION_BASE = 10000.0  # wavelength base of the sine-cosine table


def sincos_positions_1d(num_positions: int, dim: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 1-D sine-cosine position table, as in MAE.

    Position p, channel k < dim/2 gets sin(p * w_k); channel dim/2 + k gets cos(p * w_k), with
    w_k = 1 / POSITION_BASE ** (2k / dim). With `cls_token`, an all-zero row is prepended.

    Returns: [1, num_positions (+1), dim] float32.
    """
    if dim % 2:
        raise ValueError(f"sin-cos positions need an even width, got {dim}")
    half = dim // 2
    omega = 1.0 / POSITION_BASE ** (torch.arange(half, dtype=torch.float64) / half)  # [dim/2]
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] * omega[None]  # [P, dim/2]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # [P, dim]
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype), table], dim=0)  # [P+1, dim]
    return table.float().unsqueeze(0)  # [1, P(+1), dim]


ATTENTION_IMPLS = ("sdpa", "math")
_attention_impl = "sdpa"


def get_attention_implementation() -> str:
    """The attention kernel `multi_head_attention` uses now: 'sdpa' or 'math'."""
    return _attention_impl


@contextlib.contextmanager
def attention_implementation(impl: str) -> Iterator[None]:
    """Run every `multi_head_attention` call inside the block with kernel `impl` ('sdpa' | 'math').

    Process-wide (not thread-local); the previous choice is restored on exit.
    """
    global _attention_impl
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention implementation must be one of {ATTENTION_IMPLS}, got {impl!r}")
    previous, _attention_impl = _attention_impl, impl
    try:
        yield
    finally:
        _attention_impl = previous


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with dropout on the weights. q, k, v: [B, H, N, d] -> [B, H, N, d]."""
    weights = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # [B, H, N, N]
    weights = F.dropout(weights.softmax(dim=-1), p=dropout_p, training=dropout_p > 0)
    return weights @ v  # [B, H, N, d]


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                         dropout_p: float = 0.0) -> torch.Tensor:
    """Unmasked scaled dot-product attention (scale 1/sqrt(head_dim)) over `num_heads` heads.

    q, k, v: [B, N, C] -> [B, N, C]. The kernel follows `attention_implementation` ('sdpa' by default).
    """
    def split(t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "b n (h d) -> b h n d", h=num_heads)  # [B, H, N, C/H]

    if _attention_impl == "math":
        out = math_attention(split(q), split(k), split(v), dropout_p)  # [B, H, N, C/H]
    else:
        out = F.scaled_dot_product_attention(split(q), split(k), split(v), dropout_p=dropout_p)
    return rearrange(out, "b h n d -> b n (h d)")  # [B, N, C]


def to_autocast_dtype(x: torch.Tensor) -> torch.Tensor:
    """x cast to the autocast compute dtype of its device when autocast is on there, else x.

    Casting an activation once before several projections saves the per-call cast autocast would do.
    """
    device_type = x.device.type
    if (x.is_floating_point() and torch.amp.is_autocast_available(device_type)
            and torch.is_autocast_enabled(device_type)):
        return x.to(torch.get_autocast_dtype(device_type))
    return x


class SwitchableAttention(Attention):
    """timm's fused-qkv self-attention (`qkv` with bias, `proj`) whose kernel follows
    `attention_implementation(...)` at every call: timm's fused SDPA path for 'sdpa', its written-out
    softmax(q k^T * scale) v for 'math'."""

    @property
    def fused_attn(self) -> bool:
        return _attention_impl == "sdpa"

    @fused_attn.setter
    def fused_attn(self, timm_default: bool) -> None:
        """timm sets its own default at construction; `attention_implementation` decides instead."""


class ViTBlock(Block):
    """timm's pre-norm ViT `Block`: x + attn(norm1(x)), then x + mlp(norm2(x)) with exact GELU.

    qkv with bias, torch LayerNorm (eps 1e-5, not timm's 1e-6), dropout `drop` after `attn.proj` and
    in the MLP, no attention-weight dropout, no layer scale, no drop path. Parameter names
    (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`) are timm's, so release and
    MAE-style checkpoints load by name.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0):
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        super().__init__(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, proj_drop=drop,
                         norm_layer=nn.LayerNorm, attn_layer=SwitchableAttention)
