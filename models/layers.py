"""Building blocks shared by the LEA networks.

- `sincos_positions_1d`: fixed 1-D sine-cosine position table (with an all-zero row for a CLS token).
- `multi_head_attention`: split heads, attend, merge heads. The kernel is chosen by
  `attention_implementation(...)`: 'sdpa' (`F.scaled_dot_product_attention`, the default) or 'math'
  (softmax(q k^T * scale) v written out, as the authors' release computes it; kept for comparisons).
- `to_autocast_dtype`: cast an activation once to the autocast compute dtype.
- `ViTBlock`: pre-norm transformer block whose parameter names (`norm1`, `attn.qkv`, `attn.proj`,
  `norm2`, `mlp.fc1`, `mlp.fc2`) match timm's ViT `Block`, so MAE-style checkpoints load by name.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

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
    B, N, C = q.shape
    head_dim = C // num_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(B, t.shape[1], num_heads, head_dim).transpose(1, 2)  # [B, H, N, C/H]

    if _attention_impl == "math":
        out = math_attention(split(q), split(k), split(v), dropout_p)  # [B, H, N, C/H]
    else:
        out = F.scaled_dot_product_attention(split(q), split(k), split(v), dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(B, N, C)  # [B, N, C]


def to_autocast_dtype(x: torch.Tensor) -> torch.Tensor:
    """x cast to the autocast compute dtype of its device when autocast is on there, else x.

    Casting an activation once before several projections saves the per-call cast autocast would do.
    """
    device_type = x.device.type
    if (x.is_floating_point() and torch.amp.is_autocast_available(device_type)
            and torch.is_autocast_enabled(device_type)):
        return x.to(torch.get_autocast_dtype(device_type))
    return x


class FusedQKVAttention(nn.Module):
    """Self-attention with one `qkv` projection (with bias) and an output `proj`; dropout `drop` after
    `proj` (none on the attention weights, as in timm's Block with `proj_drop`)."""

    def __init__(self, dim: int, num_heads: int, drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, C] -> [B, N, C]."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x [B, N, C]
        out = multi_head_attention(q, k, v, self.num_heads)  # [B, N, C]
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, C] -> [B, N, C]."""
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)). LayerNorm eps 1e-5."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = FusedQKVAttention(dim, num_heads, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, C] -> [B, N, C]."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
