"""Process-group helpers for single-process and `torchrun` training.

A run is distributed when `torchrun` sets WORLD_SIZE > 1: each process joins a process group
(nccl on CUDA, gloo on CPU), wraps its model in DistributedDataParallel and reads its own shard of
every epoch. Only rank 0 logs and writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from utils.errors import ConfigError, describe

DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass
class DistInfo:
    """Where this process runs and which part of the work it does."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(choice: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> this process's GPU when CUDA is available, else CPU."""
    if choice not in DEVICE_CHOICES:
        raise ConfigError(describe("--device", f"one of {list(DEVICE_CHOICES)}", repr(choice)))
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError(describe("--device", "a machine with CUDA for 'cuda'", "no CUDA device"))
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def init_distributed(device_choice: str = "auto") -> DistInfo:
    """Join the process group that torchrun describes in the environment (no-op when alone)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around `model` when running with several processes."""
    if not info.distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar logs over processes (identity when alone)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64,
                     device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist()))


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every process (e.g. the run folder it created)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
