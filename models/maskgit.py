"""Conditional MaskGIT token transformer and its iterative (confidence-based) decoding.

The condition (a CLIP image feature, 1024-d in the paper) becomes one token through `decoder_embed`;
it is followed by the embeddings of the VQGAN token ids (some of them the mask id). Learned positions
over [condition; tokens] are added, then LayerNorm and dropout, then BERT-style post-norm layers.
Logits are tied to the token embedding: mlps(x) @ token_emb.weight^T + mlps_bias; the condition
position and the logits of the non-codebook ids are dropped.

`condition: adaln` (opt-in; the release has `prefix` only) also feeds the condition to every layer:
each LayerNorm output is scaled and shifted by (1 + scale, shift) computed from the condition token's
embedding (SiLU, then a per-layer Linear initialised to zero, so training starts from the prefix
model). The extra parameters are `decoder.<i>.modulation.*`.

Parameter names follow the authors' release, so its checkpoints load with strict=True.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from models.layers import multi_head_attention, to_autocast_dtype
from models.hub import PretrainedMixin
from utils.config import register_model_config
from utils.errors import ConfigError, DataError, describe

LAYER_NORM_EPS = 1e-12  # LayerNorm eps inside the layers and the head (BERT convention)
INIT_STD = 0.02  # std of the truncated-normal init of Linear and Embedding weights
EPS = 1e-20  # floor inside logs of probabilities and uniform noise
CONDITION_MODES = ("prefix", "adaln")
MODULATED_NORMS = 2  # LayerNorms per layer whose output the condition scales and shifts ('adaln')


@register_model_config("maskgit")
@dataclass
class MaskGITConfig:
    num_codebook: int = 1024
    token_grid: int = 16  # tokens per side
    embed_dim: int = 768
    depth: int = 24
    num_heads: int = 16
    drop_rate: float = 0.01
    condition_dim: int = 1024
    extra_tokens: int = 1000  # unused ids between the codebook and the mask id, as in the release
    mlp_ratio: float = 4.0
    condition: str = "prefix"  # 'prefix' (the release's one condition token) | 'adaln' (also every layer)

    def __post_init__(self):
        if self.condition not in CONDITION_MODES:
            raise ConfigError(describe("MaskGIT condition", f"one of {list(CONDITION_MODES)}", repr(self.condition)))
        if self.embed_dim % self.num_heads:
            raise ConfigError(describe("MaskGIT embed_dim", f"a multiple of num_heads = {self.num_heads}",
                                       self.embed_dim))

    @property
    def num_tokens(self) -> int:
        return self.token_grid * self.token_grid

    @property
    def mask_token_id(self) -> int:
        return self.num_codebook + self.extra_tokens

    @property
    def vocab_size(self) -> int:
        """Rows of `token_emb`: codebook, extra ids and the mask id."""
        return self.mask_token_id + 1

    @classmethod
    def from_release_config(cls, config: Mapping[str, Any]) -> "MaskGITConfig":
        """Build from a release YAML dict (`MaskGIT_Transformer.yaml`, section `Model`).

        token_grid = Model.resolution // Model.patch_size; Model.decoder_embed_dim / decoder_depth are
        the transformer width / depth.
        """
        model = config["Model"]
        try:
            if model["resolution"] % model["patch_size"]:
                raise ConfigError(describe("MaskGIT config Model.resolution",
                                           f"a multiple of Model.patch_size = {model['patch_size']}",
                                           model["resolution"]))
            kwargs = dict(token_grid=model["resolution"] // model["patch_size"],
                          embed_dim=model["decoder_embed_dim"], depth=model["decoder_depth"],
                          num_heads=model["num_heads"], drop_rate=model["drop_rate"],
                          num_codebook=model["num_codebook"])
        except KeyError as err:
            raise ConfigError(describe("MaskGIT config", f"key Model.{err.args[0]}", "it missing")) from None
        known = {f.name for f in fields(cls)}
        kwargs.update({k: v for k, v in model.items() if k in known and k not in kwargs})
        return cls(**kwargs)


def mask_schedule(name: str) -> Callable:
    """Mask-ratio schedule gamma(r): 1 at r = 0, 0 at r = 1. Works on floats and tensors.

    'cosine' cos(pi r / 2) (the paper's), 'linear' 1 - r, 'square' 1 - r^2, 'cubic' 1 - r^3,
    'sqrt' 1 - sqrt(r).
    """
    def cosine(r):
        return torch.cos(r * math.pi / 2) if torch.is_tensor(r) else math.cos(r * math.pi / 2)

    schedules = {"cosine": cosine, "linear": lambda r: 1 - r, "square": lambda r: 1 - r ** 2,
                 "cubic": lambda r: 1 - r ** 3, "sqrt": lambda r: 1 - r ** 0.5}
    if name not in schedules:
        raise ConfigError(describe("mask schedule", f"one of {sorted(schedules)}", repr(name)))
    return schedules[name]


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate query / key / value / proj projections (with biases);
    dropout `drop` on the attention weights while training."""

    def __init__(self, dim: int, num_heads: int, drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.drop = drop
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, C] -> [B, N, C]."""
        dropout_p = self.drop if self.training else 0.0
        x = to_autocast_dtype(x)  # one cast for the three projections instead of one each
        out = multi_head_attention(self.query(x), self.key(x), self.value(x), self.num_heads, dropout_p)
        return self.proj(out)


class PostNormLayer(nn.Module):
    """x = norm1(x + drop(attn(x))); x = norm2(x + drop(linear2(gelu(linear1(x))))).

    With `conditioned`, each norm's output n becomes n * (1 + scale) + shift, (shift, scale) per norm
    from `modulation(cond)`, cond being the condition token's embedding [B, C].
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float, conditioned: bool = False):
        super().__init__()
        self.self_attn = SelfAttention(dim, num_heads, drop)
        self.linear1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.linear2 = nn.Linear(int(dim * mlp_ratio), dim)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(drop)
        self.modulation = (nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * MODULATED_NORMS * dim))
                           if conditioned else None)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, N, C], cond: [B, C] (used only by a conditioned layer) -> [B, N, C]."""
        mods = (None if self.modulation is None
                else self.modulation(cond).unsqueeze(1).chunk(2 * MODULATED_NORMS, dim=-1))  # 4 x [B, 1, C]
        x = self.modulate(self.norm1(x + self.dropout(self.self_attn(x))), mods, 0)
        return self.modulate(self.norm2(x + self.dropout(self.linear2(F.gelu(self.linear1(x))))), mods, 1)

    @staticmethod
    def modulate(n: torch.Tensor, mods: tuple[torch.Tensor, ...] | None, norm: int) -> torch.Tensor:
        """n * (1 + scale) + shift with norm `norm`'s (shift, scale) of `mods`; n itself without mods."""
        if mods is None:
            return n
        shift, scale = mods[2 * norm], mods[2 * norm + 1]
        return n * (1 + scale) + shift


class MaskGITTransformer(PretrainedMixin, nn.Module):
    """Bidirectional token transformer conditioned on one feature vector per image."""

    pretrained_kind = "maskgit"  # the `kind` train.py writes
    config_class = MaskGITConfig

    def __init__(self, config: MaskGITConfig):
        super().__init__()
        self.config = config
        c = config
        self.mask_token_id = c.mask_token_id
        self.decoder_embed = nn.Linear(c.condition_dim, c.embed_dim)
        self.token_emb = nn.Embedding(c.vocab_size, c.embed_dim)
        self.de_pos_emb = nn.Embedding(c.num_tokens + 1, c.embed_dim)  # [condition; tokens]
        self.ln = nn.LayerNorm(c.embed_dim)
        self.drop = nn.Dropout(c.drop_rate)
        self.decoder = nn.ModuleList(PostNormLayer(c.embed_dim, c.num_heads, c.mlp_ratio, c.drop_rate,
                                                   conditioned=c.condition == "adaln")
                                     for _ in range(c.depth))
        self.mlps = nn.Sequential(nn.Linear(c.embed_dim, c.embed_dim), nn.GELU(),
                                  nn.LayerNorm(c.embed_dim, eps=LAYER_NORM_EPS))
        self.mlps_bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.initialize_weights()

    def initialize_weights(self):
        """Linear / Embedding weights truncated-normal(0, 0.02), zero biases, LayerNorm 1/0; the
        'adaln' modulations zero (each layer starts as the prefix model's)."""
        nn.init.zeros_(self.mlps_bias)
        self.apply(self._init_module)
        for layer in self.decoder:
            if layer.modulation is not None:
                nn.init.zeros_(layer.modulation[-1].weight)
                nn.init.zeros_(layer.modulation[-1].bias)

    @staticmethod
    def _init_module(m: nn.Module):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
        if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, token_ids: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """token_ids: [B, N] long (may hold mask_token_id), condition: [B, condition_dim]
        -> logits [B, N, num_codebook]."""
        c = self.config
        if token_ids.dim() != 2 or token_ids.shape[1] != c.num_tokens:
            raise DataError(describe("MaskGIT token_ids", f"[B, {c.num_tokens}]", list(token_ids.shape)))
        if condition.shape != (token_ids.shape[0], c.condition_dim):
            raise DataError(describe("MaskGIT condition", f"[{token_ids.shape[0]}, {c.condition_dim}]",
                                     list(condition.shape)))
        cond = self.decoder_embed(condition)  # [B, C]
        tokens = self.token_emb(token_ids)  # [B, N, C]
        x = torch.cat([cond.unsqueeze(1), tokens.to(cond.dtype)], dim=1) + self.de_pos_emb.weight  # [B, N+1, C]
        x = self.drop(self.ln(x))
        for layer in self.decoder:
            x = layer(x, cond)
        head = self.mlps(x[:, 1:])  # [B, N, C]; the condition position has no logits
        return F.linear(head, self.token_emb.weight[:c.num_codebook],
                        self.mlps_bias[:c.num_codebook])  # [B, N, num_codebook]

    def guided_logits(self, token_ids: torch.Tensor, condition: torch.Tensor,
                      guidance_scale: float = 0.0) -> torch.Tensor:
        """Logits [B, N, num_codebook] with classifier-free guidance:
        cond + guidance_scale * (cond - null), the null condition being all zeros (what condition
        dropout trains). guidance_scale 0 is one plain forward pass."""
        if guidance_scale == 0:
            return self(token_ids, condition)
        both = self(torch.cat([token_ids, token_ids]),
                    torch.cat([condition, torch.zeros_like(condition)])).float()  # [2B, N, K]
        cond, null = both.chunk(2)
        return cond + guidance_scale * (cond - null)

    @torch.no_grad()
    def generate(self, condition: torch.Tensor, num_samples: int = 1, steps: int = 11,
                 schedule: str = "cosine", choice_temperature: float = 4.5,
                 generator: torch.Generator | None = None, return_history: bool = False,
                 guidance_scale: float = 0.0):
        """Iterative decoding from an all-masked grid.

        condition: [B, condition_dim]. Each row is decoded `num_samples` times in one batch of
        B * num_samples rows. Step t (of T = `steps`): sample every position from softmax(logits),
        keep tokens already known, score the new ones by log p(sampled) + choice_temperature *
        (1 - (t+1)/T) * Gumbel noise (known tokens score +inf) and re-mask the
        n = floor(N * gamma((t+1)/T)) least confident, n clipped to [1, #masked - 1]. The last step's
        samples are returned. `generator` (on the condition's device) makes sampling reproducible.
        `guidance_scale` > 0 samples from classifier-free-guided logits (`guided_logits`); 0 is
        the release's unguided sampling, exactly.
        The module's train / eval mode is left as it is: call `.eval()` first to disable dropout.

        Returns token ids [B, num_samples, N] (long, in [0, num_codebook)); with `return_history`,
        also the list of masked-token counts left after each step (the last one is 0).
        """
        c = self.config
        if steps < 1 or num_samples < 1 or guidance_scale < 0:
            raise ConfigError(describe("MaskGIT generate", "steps >= 1, num_samples >= 1, guidance_scale >= 0",
                                       f"steps={steps}, num_samples={num_samples}, guidance_scale={guidance_scale}"))
        if generator is not None and generator.device.type != condition.device.type:
            raise ConfigError(describe("MaskGIT generate generator", f"a generator on {condition.device}",
                                       f"one on {generator.device}"))
        gamma = mask_schedule(schedule)
        B, N = condition.shape[0], c.num_tokens
        condition = condition.repeat_interleave(num_samples, dim=0)  # [B*S, condition_dim]
        ids = torch.full((B * num_samples, N), self.mask_token_id, dtype=torch.long,
                         device=condition.device)  # [B*S, N]
        history = []
        for t in range(steps):
            probs = self.guided_logits(ids, condition, guidance_scale).float().softmax(-1)  # [B*S, N, K]
            sampled = torch.multinomial(probs.reshape(-1, c.num_codebook), 1,
                                        generator=generator).reshape(ids.shape)  # [B*S, N]
            unknown = ids == self.mask_token_id  # [B*S, N]
            sampled = torch.where(unknown, sampled, ids)
            if t == steps - 1:
                ids = sampled
                history.append(0)
                break
            ratio = (t + 1) / steps
            num_unknown = int(unknown[0].sum())  # every row re-masks the same number of tokens
            n_mask = max(1, min(num_unknown - 1, math.floor(N * gamma(ratio))))
            log_p = probs.gather(-1, sampled.unsqueeze(-1)).squeeze(-1).clamp_min(EPS).log()  # [B*S, N]
            uniform = torch.rand(ids.shape, generator=generator, device=ids.device).clamp(EPS, 1 - EPS)
            gumbel = -torch.log(-torch.log(uniform))
            confidence = log_p + choice_temperature * (1 - ratio) * gumbel
            confidence = confidence.masked_fill(~unknown, math.inf)
            remask = confidence.topk(n_mask, dim=-1, largest=False).indices  # [B*S, n_mask]
            ids = sampled.scatter(1, remask, self.mask_token_id)
            history.append(n_mask)
        tokens = rearrange(ids, "(b s) n -> b s n", s=num_samples)  # [B, S, N]
        return (tokens, history) if return_history else tokens
