"""Patch discriminator for VQGAN training: a stack of strided 4x4 convolutions that scores
overlapping image patches (one logit per patch) as real or reconstructed.

    conv 4x4 /2 (3 -> C) -> LeakyReLU
    for i in 1 .. n_layers-1:  conv 4x4 /2 (-> C * 2^i, capped at 8C) -> GroupNorm -> LeakyReLU
    conv 4x4 /1 (-> C * 2^n_layers, capped at 8C) -> GroupNorm -> LeakyReLU
    conv 4x4 /1 (-> 1)

GroupNorm instead of BatchNorm keeps every sample independent of the rest of its batch, so
gradient accumulation and DistributedDataParallel see the same function as one large batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

KERNEL = 4
PADDING = 1
LEAKY_SLOPE = 0.2
MAX_WIDTH_FACTOR = 8   # widths stop doubling at 8 x channels
MAX_GROUPS = 32
INIT_STD = 0.02


@dataclass
class PatchDiscriminatorConfig:
    in_ch: int = 3
    channels: int = 64
    n_layers: int = 2


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(MAX_GROUPS, ch), ch)


class PatchDiscriminator(nn.Module):
    """image [B, 3, H, W] in [0, 1] -> patch logits [B, 1, h, w]."""

    def __init__(self, config: PatchDiscriminatorConfig):
        super().__init__()
        c = config.channels
        layers: list[nn.Module] = [nn.Conv2d(config.in_ch, c, KERNEL, 2, PADDING), nn.LeakyReLU(LEAKY_SLOPE)]
        width = c
        for i in range(1, config.n_layers + 1):
            out = c * min(2 ** i, MAX_WIDTH_FACTOR)
            stride = 2 if i < config.n_layers else 1
            layers += [nn.Conv2d(width, out, KERNEL, stride, PADDING, bias=False), _norm(out),
                       nn.LeakyReLU(LEAKY_SLOPE)]
            width = out
        layers.append(nn.Conv2d(width, 1, KERNEL, 1, PADDING))
        self.main = nn.Sequential(*layers)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, 3, H, W] -> logits [B, 1, h, w]."""
        return self.main(image)
