"""MaskGIT's VQGAN tokenizer: convolutional encoder, nearest-codebook quantiser, convolutional decoder.

Images are RGB in [0, 1] (no normalisation, no tanh). At the paper config a 256 x 256 image becomes a
16 x 16 grid of codebook indices (1024 codes of width 256) and back.

Residual blocks keep MaskGIT's quirk: when the width changes, the 1 x 1 `nin_shortcut` is applied to
the block's output branch h and added to it (out = h + nin_shortcut(h)); the input x is then not
added at all. Google's published tokenizer weights depend on this.

Parameter names follow the authors' release, so its checkpoints load with strict=True.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from models.hub import PretrainedMixin
from utils.config import register_model_config
from utils.errors import ConfigError, DataError, describe

NUM_GROUPS = 32  # GroupNorm groups of the release and the published tokenizer
GROUP_NORM_EPS = 1e-5  # epsilon of every GroupNorm
SAMPLE_FACTOR = 2  # spatial factor of each down- / up-sampling step
UINT8_MAX = 255.0  # uint8 images are scaled to [0, 1] by it

# release config fields with the only value this implementation supports
RELEASE_FIXED_FIELDS = {"norm_mode": "gn", "use_spectral_norm": False, "sample_with_conv": False,
                        "use_preconv": False, "norm_codebook": False}


@register_model_config("tokenizer")
@dataclass
class VQGANConfig:
    resolution: int = 256
    in_ch: int = 3
    out_ch: int = 3
    ch_base: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2  # residual blocks per resolution level
    num_res_mids: int = 2  # residual blocks at the lowest resolution (encoder and decoder)
    ch_latent: int = 256  # encoder output width = codebook width
    num_codebook: int = 1024
    dim_codebook: int = 256
    with_tanh: bool = False  # squash decoder output with tanh (off: images in [0, 1])
    # GroupNorm groups of every normalisation; changes no weight's name or shape. With as many groups
    # as channels each channel is normalised on its own, which removes its image mean (small models).
    norm_groups: int = NUM_GROUPS

    def __post_init__(self):
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        if self.ch_latent != self.dim_codebook:
            raise ConfigError(describe("VQGAN dim_codebook", f"ch_latent = {self.ch_latent}",
                                       self.dim_codebook))
        widths = sorted({self.ch_base * m for m in self.ch_mult})
        if self.norm_groups < 1 or any(w % self.norm_groups for w in widths):
            raise ConfigError(describe("VQGAN norm_groups", f"a positive divisor of every width {widths}",
                                       self.norm_groups))
        if self.resolution % self.downsample_factor:
            raise ConfigError(describe("VQGAN resolution", f"a multiple of {self.downsample_factor}",
                                       self.resolution))

    @property
    def downsample_factor(self) -> int:
        return SAMPLE_FACTOR ** (len(self.ch_mult) - 1)

    @property
    def token_grid(self) -> int:
        """Tokens per side of the index grid."""
        return self.resolution // self.downsample_factor

    @classmethod
    def from_release_config(cls, config: Mapping[str, Any]) -> "VQGANConfig":
        """Build from a release YAML dict (`MaskGIT_AE.yaml`, section `Model`).

        Options this implementation does not have (spectral norm, conv sampling, pre-quant conv,
        normalised codebook, non-GroupNorm) must be at their paper values.
        """
        model = config.get("Model", config)
        for key, value in RELEASE_FIXED_FIELDS.items():
            if key in model and model[key] != value:
                raise ConfigError(describe(f"VQGAN config Model.{key}", repr(value), repr(model[key])))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in model.items() if k in known})


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=GROUP_NORM_EPS)


class ResBlock(nn.Module):
    """GN -> swish -> conv3x3 -> GN -> swish -> conv3x3 (no conv biases), with MaskGIT's shortcut."""

    def __init__(self, in_ch: int, out_ch: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = group_norm(out_ch, groups)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(out_ch, out_ch, 1, bias=False) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, in_ch, H, W] -> [B, out_ch, H, W]."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.nin_shortcut is not None:
            return h + self.nin_shortcut(h)
        return x + h


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 conv (with bias)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, 2H, 2W]."""
        return self.conv(F.interpolate(x, scale_factor=SAMPLE_FACTOR, mode="nearest"))


class Level(nn.Module):
    """One resolution level: residual blocks (`block`), then optionally an `upsample` step."""

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, groups: int, upsample: bool = False):
        super().__init__()
        self.block = nn.ModuleList(ResBlock(in_ch if i == 0 else out_ch, out_ch, groups) for i in range(num_blocks))
        self.upsample = Upsample(out_ch) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, in_ch, H, W] -> [B, out_ch, H, W] (or [B, out_ch, 2H, 2W] with `upsample`)."""
        for block in self.block:
            x = block(x)
        return x if self.upsample is None else self.upsample(x)


class Encoder(nn.Module):
    """[B, in_ch, H, W] -> [B, ch_latent, H / f, W / f] with f = 2 ** (len(ch_mult) - 1)."""

    def __init__(self, c: VQGANConfig):
        super().__init__()
        widths = [c.ch_base * m for m in c.ch_mult]
        self.conv_in = nn.Conv2d(c.in_ch, c.ch_base, 3, padding=1, bias=False)
        self.down = nn.ModuleList(Level(([c.ch_base] + widths)[i], widths[i], c.num_res_blocks, c.norm_groups)
                                  for i in range(len(widths)))
        self.mid = nn.ModuleList(ResBlock(widths[-1], widths[-1], c.norm_groups) for _ in range(c.num_res_mids))
        self.norm_out = group_norm(widths[-1], c.norm_groups)
        self.conv_out = nn.Conv2d(widths[-1], c.ch_latent, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # [B, ch_base, H, W]
        for i, level in enumerate(self.down):
            h = level(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, SAMPLE_FACTOR)  # [B, C, H/2, W/2]
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # [B, ch_latent, h, w]


class Decoder(nn.Module):
    """[B, ch_latent, h, w] -> [B, out_ch, h * f, w * f]; levels run from the coarsest (`up.0`)."""

    def __init__(self, c: VQGANConfig):
        super().__init__()
        widths = [c.ch_base * m for m in reversed(c.ch_mult)]  # coarsest first
        self.with_tanh = c.with_tanh
        self.conv_in = nn.Conv2d(c.ch_latent, widths[0], 3, padding=1)
        self.mid = nn.ModuleList(ResBlock(widths[0], widths[0], c.norm_groups) for _ in range(c.num_res_mids))
        self.up = nn.ModuleList(Level(widths[max(i - 1, 0)], width, c.num_res_blocks, c.norm_groups,
                                      upsample=i < len(widths) - 1)
                                for i, width in enumerate(widths))
        self.norm_out = group_norm(widths[-1], c.norm_groups)
        self.conv_out = nn.Conv2d(widths[-1], c.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)  # [B, C, h, w]
        for block in self.mid:
            h = block(h)
        for level in self.up:
            h = level(h)  # [B, C', 2h, 2w] except at the finest level
        out = self.conv_out(F.silu(self.norm_out(h)))  # [B, out_ch, H, W]
        return torch.tanh(out) if self.with_tanh else out


class VectorQuantizer(nn.Module):
    """Nearest codebook entry by squared L2 distance (no normalisation)."""

    def __init__(self, num_codebook: int, dim_codebook: int):
        super().__init__()
        self.embedding = nn.Embedding(num_codebook, dim_codebook)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """z: [B, D, h, w] -> indices [B, h, w] (long). Distances are computed in float32."""
        B, _, h, w = z.shape
        flat = rearrange(z, "b d h w -> (b h w) d").float()  # [B*h*w, D]
        codes = self.embedding.weight.float()  # [K, D]
        dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t()
                + codes.pow(2).sum(1)[None])  # [B*h*w, K]
        return rearrange(dist.argmin(1), "(b h w) -> b h w", b=B, h=h, w=w)  # [B, h, w]

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: [B, h, w] -> quantised map [B, D, h, w]."""
        return rearrange(self.embedding(indices), "b h w d -> b d h w")  # [B, D, h, w]


def tokenizer_input(images: np.ndarray, size: int) -> torch.Tensor:
    """Stimuli uint8 [N, H, W, 3] -> float [N, 3, size, size] in [0, 1], resized (antialiased bilinear;
    unchanged when already that size) the one way the tokenizer sees images: in its training, when
    MaskGIT's training tokens are made, and in the round trip of the diagnostics."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / UINT8_MAX  # [N, 3, H, W]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0)


class VQGAN(PretrainedMixin, nn.Module):
    """MaskGIT VQGAN tokenizer (encoder, `quantizer`, decoder)."""

    pretrained_kind = "tokenizer"  # the `kind` train.py writes
    config_class = VQGANConfig

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantizer = VectorQuantizer(config.num_codebook, config.dim_codebook)

    def _check_image(self, image: torch.Tensor):
        c = self.config
        if (image.dim() != 4 or image.shape[1] != c.in_ch
                or image.shape[2] % c.downsample_factor or image.shape[3] % c.downsample_factor):
            raise DataError(describe("VQGAN image", f"[B, {c.in_ch}, H, W] with H, W multiples of "
                                     f"{c.downsample_factor}", list(image.shape)))

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image: [B, 3, H, W] in [0, 1] -> (quant [B, D, h, w], indices [B, h, w])."""
        self._check_image(image)
        indices = self.quantizer.indices(self.encoder(image))
        return self.quantizer.lookup(indices), indices

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        """quant: [B, D, h, w] -> image [B, 3, H, W]."""
        return self.decoder(quant)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: [B, h, w], or [B, h*w] for a square grid -> image [B, 3, H, W]."""
        if indices.dim() == 2:
            side = int(round(indices.shape[1] ** 0.5))
            if side * side != indices.shape[1]:
                raise DataError(describe("VQGAN indices", "[B, h, w] or [B, n] with n a square",
                                         list(indices.shape)))
            indices = rearrange(indices, "b (h w) -> b h w", h=side)  # [B, h, w]
        if indices.dim() != 3:
            raise DataError(describe("VQGAN indices", "[B, h, w] or [B, h*w]", list(indices.shape)))
        return self.decode(self.quantizer.lookup(indices.long()))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass with the straight-through estimator.

        image: [B, 3, H, W] in [0, 1] -> (reconstruction [B, 3, H, W], codebook_loss, commitment_loss,
        indices [B, h, w]). codebook_loss = mse(quant, sg(z)) trains the codebook; commitment_loss =
        mse(z, sg(quant)) trains the encoder and is returned unweighted: the caller multiplies it by
        beta (0.25 in the paper).
        """
        self._check_image(image)
        z = self.encoder(image)  # [B, D, h, w]
        indices = self.quantizer.indices(z)
        quant = self.quantizer.lookup(indices).to(z.dtype)  # [B, D, h, w]
        codebook_loss = F.mse_loss(quant.float(), z.detach().float())
        commitment_loss = F.mse_loss(z.float(), quant.detach().float())
        quant_st = z + (quant - z).detach()  # value of quant, gradient to z
        return self.decode(quant_st), codebook_loss, commitment_loss, indices
