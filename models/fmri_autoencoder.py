"""fMRI autoencoder of LEA: ROI-group tokens -> ViT encoder -> one latent -> ViT decoder -> voxels.

Encoder E_f: the voxel vector [B, 1, V] is cut into ROI groups (sizes `roi_patch`, in that order).
Each group i becomes `patch_size` tokens through Conv1d(1, patch_size, 3) and Linear(n_i, C); the
tokens of all groups, a CLS token and fixed sin-cos positions go through pre-norm ViT blocks; the
normalised CLS token projected by `pred` is the latent z_f [B, 1, latent_dim].

Decoder D_f: the latent alone, embedded and followed by one mask token per encoder token, goes
through ViT blocks; the tokens of group i are mapped back to n_i voxels per channel and the
`patch_size` channels merged by a shared Conv1d -> [B, 1, V].

Parameter names follow the authors' release, so its checkpoints load with strict=True.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn as nn

from models.layers import ViTBlock, sincos_positions_1d
from models.hub import PretrainedMixin
from utils.config import register_model_config
from utils.errors import ConfigError, DataError, describe

CONV_KERNEL = 3  # kernel of the per-ROI Conv1d and of decoder_pred
INIT_STD = 0.02  # std of the normal init of Conv1d weights and of cls / mask tokens


@register_model_config("fmri_autoencoder")
@dataclass
class FMRIAutoencoderConfig:
    roi_patch: tuple[int, ...] = ()  # voxels per ROI group, in voxel-vector order; () = not yet read from the data
    patch_size: int = 32  # Conv1d channels per ROI = tokens per ROI
    embed_dim: int = 1024
    encoder_depth: int = 24
    num_heads: int = 16
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 1.0
    latent_dim: int = 1024
    drop_rate: float = 0.0

    def __post_init__(self):
        self.roi_patch = tuple(int(n) for n in self.roi_patch)
        if self.roi_patch and min(self.roi_patch) < 1:
            raise ConfigError(describe("roi_patch", "positive voxel counts", self.roi_patch))
        for name, width, heads in (("embed_dim", self.embed_dim, self.num_heads),
                                   ("decoder_embed_dim", self.decoder_embed_dim, self.decoder_num_heads)):
            if width % heads or width % 2:
                raise ConfigError(describe(name, f"an even width divisible by {heads} heads", width))

    @property
    def num_voxels(self) -> int:
        return sum(self.roi_patch)

    @property
    def num_tokens(self) -> int:
        """Encoder tokens without CLS: patch_size per ROI group."""
        return len(self.roi_patch) * self.patch_size

    @classmethod
    def from_release_config(cls, config: Mapping[str, Any]) -> "FMRIAutoencoderConfig":
        """Build from a release YAML dict (`fMRI_TransAE_*.yaml`: sections `Data` and `Model`).

        The release's decoder uses `Model.num_heads` heads unless `Model.decoder_num_heads` is given.
        `Data.num_voxel`, when present, must equal the sum of `Data.roi_patch`.
        """
        try:
            data, model = config["Data"], config["Model"]
            roi_patch = tuple(data["roi_patch"])
            kwargs = dict(roi_patch=roi_patch, patch_size=data["patch_size"],
                          embed_dim=model["embed_dim"], encoder_depth=model["encoder_depth"],
                          num_heads=model["num_heads"],
                          decoder_num_heads=model.get("decoder_num_heads", model["num_heads"]),
                          decoder_embed_dim=model["decoder_embed_dim"],
                          decoder_depth=model["decoder_depth"], drop_rate=model["drop_rate"])
        except KeyError as err:
            raise ConfigError(describe("fMRI autoencoder config", f"key {err.args[0]!r}",
                                       "it missing")) from None
        known = {f.name for f in fields(cls)}
        kwargs.update({k: v for k, v in model.items() if k in known and k not in kwargs})
        if "num_voxel" in data and int(data["num_voxel"]) != sum(roi_patch):
            raise ConfigError(describe("Data.num_voxel", f"sum(Data.roi_patch) = {sum(roi_patch)}",
                                       data["num_voxel"]))
        return cls(**kwargs)


class ROIPatchEmbed(nn.Module):
    """Per ROI group: Conv1d(1, patch_size, 3) over its voxels, then Linear(n_i, embed_dim)."""

    def __init__(self, roi_patch: tuple[int, ...], patch_size: int, embed_dim: int):
        super().__init__()
        self.roi_patch = roi_patch
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv1d(1, patch_size, CONV_KERNEL, padding=CONV_KERNEL // 2),
                          nn.Linear(n, embed_dim))
            for n in roi_patch)

    def forward(self, fmri: torch.Tensor) -> torch.Tensor:
        """fmri: [B, 1, V] -> tokens [B, n_groups * patch_size, embed_dim]."""
        groups = fmri.split(self.roi_patch, dim=-1)  # each [B, 1, n_i]
        tokens = [layer(g) for layer, g in zip(self.layers, groups)]  # each [B, patch_size, C]
        return torch.cat(tokens, dim=1)  # [B, L, C]


class FMRIAutoencoder(PretrainedMixin, nn.Module):
    """LEA's fMRI autoencoder (E_f, D_f). See the module docstring for the data flow."""

    pretrained_kind = "fmri_autoencoder"  # the `kind` train.py writes
    config_class = FMRIAutoencoderConfig

    def __init__(self, config: FMRIAutoencoderConfig):
        if not config.roi_patch:
            raise ConfigError(describe("FMRIAutoencoderConfig.roi_patch", "the voxels per ROI group, "
                                       "read from the data (datasets.load_subject(...).roi_patch)", "()"))
        super().__init__()
        self.config = config
        c = config
        # encoder
        self.patch_embed = ROIPatchEmbed(c.roi_patch, c.patch_size, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.register_buffer("pos_embed", sincos_positions_1d(c.num_tokens, c.embed_dim))  # [1, L+1, C]
        self.blocks = nn.ModuleList(ViTBlock(c.embed_dim, c.num_heads, c.mlp_ratio, c.drop_rate)
                                    for _ in range(c.encoder_depth))
        self.norm = nn.LayerNorm(c.embed_dim)
        self.pred = nn.Linear(c.embed_dim, c.latent_dim)
        # decoder
        self.decoder_embed = nn.Linear(c.latent_dim, c.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.register_buffer("decoder_pos_embed",
                             sincos_positions_1d(c.num_tokens, c.decoder_embed_dim))  # [1, L+1, D]
        self.decoder_blocks = nn.ModuleList(
            ViTBlock(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio, c.drop_rate)
            for _ in range(c.decoder_depth))
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim)
        self.channel_mapper = nn.ModuleList(nn.Sequential(nn.Linear(c.decoder_embed_dim, n))
                                            for n in c.roi_patch)
        self.decoder_pred = nn.Conv1d(c.patch_size, 1, CONV_KERNEL, padding=CONV_KERNEL // 2)
        self.initialize_weights()

    def initialize_weights(self):
        """From-scratch init: sin-cos positions, xavier-uniform Linear with zero bias, LayerNorm 1/0,
        Conv1d weights normal(0.02) with zero bias, cls / mask tokens normal(0.02)."""
        c = self.config
        self.pos_embed.copy_(sincos_positions_1d(c.num_tokens, c.embed_dim))
        self.decoder_pos_embed.copy_(sincos_positions_1d(c.num_tokens, c.decoder_embed_dim))
        nn.init.normal_(self.cls_token, std=INIT_STD)
        nn.init.normal_(self.mask_token, std=INIT_STD)
        self.apply(self._init_module)

    @staticmethod
    def _init_module(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
        elif isinstance(m, nn.Conv1d):
            nn.init.normal_(m.weight, std=INIT_STD)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.LayerNorm)) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def _check_fmri(self, fmri: torch.Tensor) -> torch.Tensor:
        """Accept [B, V] or [B, 1, V]; return [B, 1, V]."""
        if fmri.dim() == 2:
            fmri = fmri.unsqueeze(1)  # [B, 1, V]
        if fmri.dim() != 3 or fmri.shape[1] != 1 or fmri.shape[2] != self.config.num_voxels:
            raise DataError(describe("fMRI autoencoder input",
                                     f"shape [B, {self.config.num_voxels}] or [B, 1, {self.config.num_voxels}]",
                                     list(fmri.shape)))
        return fmri

    def encode(self, fmri: torch.Tensor) -> torch.Tensor:
        """fmri: [B, 1, V] or [B, V] -> latent z_f [B, 1, latent_dim]."""
        x = self.patch_embed(self._check_fmri(fmri))  # [B, L, C]
        x = x + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)  # [B, 1, C]
        x = torch.cat([cls, x], dim=1)  # [B, L+1, C]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.pred(x[:, :1])  # [B, 1, latent_dim]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent: [B, 1, latent_dim] or [B, latent_dim] -> reconstruction [B, 1, V]."""
        if latent.dim() == 2:
            latent = latent.unsqueeze(1)  # [B, 1, latent_dim]
        if latent.dim() != 3 or latent.shape[1:] != (1, self.config.latent_dim):
            raise DataError(describe("fMRI autoencoder latent",
                                     f"shape [B, {self.config.latent_dim}] or [B, 1, {self.config.latent_dim}]",
                                     list(latent.shape)))
        x = self.decoder_embed(latent)  # [B, 1, D]
        masks = self.mask_token.expand(x.shape[0], self.config.num_tokens, -1)  # [B, L, D]
        x = torch.cat([x, masks.to(x.dtype)], dim=1) + self.decoder_pos_embed  # [B, L+1, D]
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)[:, 1:]  # [B, L, D]
        groups = x.split(self.config.patch_size, dim=1)  # each [B, patch_size, D]
        voxels = [self.decoder_pred(mapper(g))  # [B, patch_size, n_i] -> [B, 1, n_i]
                  for mapper, g in zip(self.channel_mapper, groups)]
        return torch.cat(voxels, dim=-1)  # [B, 1, V]

    def forward(self, fmri: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fmri: [B, 1, V] or [B, V] -> (latent [B, 1, latent_dim], reconstruction [B, 1, V])."""
        latent = self.encode(fmri)
        return latent, self.decode(latent)
