"""AdamW with decoupled weight decay and a warm-up + decay learning-rate schedule.

The schedule is a pure function of the optimiser step (`lr_at`), so a resumed run recomputes
exactly the learning rate it would have used without the interruption.

    step < warmup_steps:  lr * (step + 1) / warmup_steps
    afterwards:           min_lr + (lr - min_lr) * decay(progress),  progress in [0, 1]
        linear:   decay = 1 - progress
        cosine:   decay = (1 + cos(pi * progress)) / 2
        constant: decay = 1  (min_lr unused)
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn

from utils.config import TrainConfig

# Parameters whose names contain one of these are never decayed: learned positions and tokens.
NO_DECAY_NAMES = ("pos_embed", "pos_emb", "cls_token", "mask_token")
# Modules whose weights are never decayed: normalisations and embedding tables.
NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.Embedding)


def lr_at(step: int, train: TrainConfig, base_lr: float | None = None) -> float:
    """Learning rate of optimiser step `step` (0-based) for peak rate `base_lr` (default train.lr)."""
    peak = train.lr if base_lr is None else base_lr
    floor = min(train.min_lr, peak)
    if step < train.warmup_steps:
        return peak * (step + 1) / train.warmup_steps
    if train.schedule == "constant":
        return peak
    span = max(train.max_steps - train.warmup_steps, 1)
    progress = min((step - train.warmup_steps) / span, 1.0)
    if train.schedule == "linear":
        decay = 1.0 - progress
    else:
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + (peak - floor) * decay


def param_groups(named_params: Iterable[tuple[str, nn.Parameter]], module: nn.Module,
                 weight_decay: float, lr: float | None = None,
                 betas: tuple[float, float] | None = None) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed group.

    Not decayed: biases and other 1-D parameters, weights of NO_DECAY_MODULES, and parameters
    named like NO_DECAY_NAMES. `named_params` are parameters of `module` (names relative to it).
    `lr` / `betas` override the optimiser's for these groups.
    """
    skip = {f"{mod_name}.{p_name}" if mod_name else p_name
            for mod_name, mod in module.named_modules() if isinstance(mod, NO_DECAY_MODULES)
            for p_name, _ in mod.named_parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name in skip or any(key in name for key in NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    extra = {} if lr is None else {"lr": lr}
    if betas is not None:
        extra["betas"] = tuple(betas)
    return [{"params": decay, "weight_decay": weight_decay, **extra},
            {"params": no_decay, "weight_decay": 0.0, **extra}]


def build_optimizer(groups: list[dict], train: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `groups` (see `param_groups`) with the config's lr and betas."""
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.betas))


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: every group's rate is its own peak lr scaled by lr_at(step) / train.lr."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, train) / train.lr)
