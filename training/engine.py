"""Generic training loop shared by every LEA stage.

A stage supplies a `TrainModule` (an nn.Module whose `forward(batch, step)` returns the loss to
minimise and a dict of scalars to log), a training dataset, optional samples and the final
model-only file. The `Trainer` does the rest:

- AdamW + warm-up/decay schedule (training/optim.py), gradient accumulation, gradient clipping,
  bf16 autocast (CUDA by default, CPU when precision=bf16);
- DistributedDataParallel and a resumable DistributedSampler under torchrun;
- rank-0 logging (CSV, TensorBoard when installed, tqdm), samples every `sample_interval` steps;
- checkpoints `{'model', 'optimizer', 'scheduler', 'step', 'elapsed_s', 'config', 'rng', 'kind'}`
  written atomically as `last.pt` and `step_XXXXXX.pt` into a fresh run folder;
- `resume`: restores weights, optimiser, schedule, every rank's RNG state and the position in
  the epoch, so that an interrupted run continues exactly as if it had not stopped (with
  num_workers=0; with worker processes the data order is still exact but augmentation draws are
  seeded per resumed epoch); its log's `time_s` goes on from the checkpoint's `elapsed_s`.
"""
from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from models.checkpoints import safe_torch_load
from models.hub import save_pretrained
from training.distributed import (DistInfo, all_reduce_mean, barrier, broadcast_object,
                                  wrap_model)
from training.logger import RunLogger
from training.optim import build_optimizer, build_scheduler, param_groups
from utils.config import REPORTING_KEYS, TrainConfig, to_dict
from utils.errors import CheckpointError, ConfigError, LEAError, describe
from utils.io import atomic_torch_save, new_run_dir

LAST_CHECKPOINT = "last.pt"
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "step", "config", "rng")
SAMPLE_SEED = 1234  # samples are drawn under this seed, outside the training RNG streams


class TrainModule(nn.Module):
    """What a stage trains: `forward(batch, step) -> (loss, {name: scalar tensor})`."""

    def optimizer_groups(self, train: TrainConfig) -> list[dict]:
        """AdamW parameter groups; override for several learning rates (e.g. a discriminator)."""
        return param_groups(self.named_parameters(), self, train.weight_decay)

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """Parameter sets whose gradient norms are clipped separately (Train.grad_clip); override
        when the module trains networks with separate objectives (a generator and its discriminator)."""
        return [list(self.parameters())]

    def after_step(self, step: int) -> None:
        """Called after every optimiser step with the new step count (e.g. to restart dead codes)."""


class Stage:
    """One network's training recipe. Subclasses set the attributes and override the hooks."""

    kind: str = "stage"
    module: TrainModule
    train_set: Dataset
    config: Any  # the stage's typed config (utils/config.py)

    @property
    def run_name(self) -> str:
        """Default prefix of the run folder."""
        return self.config.name

    def check_checkpoint(self, ckpt: dict, where: str) -> None:
        """Refuse a checkpoint whose network does not fit this stage's config and data."""
        saved = ckpt.get("config", {}).get("Model")
        current = to_dict(self.config.model)
        if saved != current:
            diff = sorted(k for k in set(saved or {}) | set(current)
                          if (saved or {}).get(k) != current.get(k))
            raise CheckpointError(describe(where, f"Model section {({k: current.get(k) for k in diff})}",
                                           {k: (saved or {}).get(k) for k in diff}))

    def sample(self, module: TrainModule, step: int, out_dir: Path) -> None:
        """Write stage-specific samples for the current weights (rank 0, eval mode, no grad)."""

    def final_artifact(self, module: TrainModule) -> tuple[str, dict]:
        """(file name, model-only payload) that inference loads; the Trainer also writes it as a
        Hub-style folder named after the file (models/hub.py)."""
        raise NotImplementedError

    def model_file(self, model: nn.Module, **extra: Any) -> dict[str, Any]:
        """The keys every final model file has (models/lea.py reads them), plus stage-specific ones."""
        return {"model": model.state_dict(), "kind": self.kind, "model_config": to_dict(self.config.model),
                "config": to_dict(self.config), **extra}


def single_stage_builders(stage_cls: type, values: dict, source: str) -> list[Callable[[Callable[[str], None]], Stage]]:
    """`train.py`'s builder list for a stage that trains one network from the whole config."""
    from utils.config import config_from_dict

    def build(log: Callable[[str], None]) -> Stage:
        cfg = config_from_dict(values, source, kind=stage_cls.kind)
        seed_everything(cfg.seed)
        return stage_cls(cfg, source, log)
    return [build]


# ---------------------------------------------------------------------------
# Run folders, seeds, RNG state
# ---------------------------------------------------------------------------


def start_run_dir(out_dir: str | Path, run_name: str, info: DistInfo) -> Path:
    """A fresh `<out_dir>/<run_name>_<timestamp>` folder (made by rank 0, shared with all ranks)."""
    path = new_run_dir(out_dir, run_name) if info.is_main else None
    return Path(broadcast_object(str(path) if path else None, info))


def check_fresh_run_dir(run_dir: Path) -> None:
    """Refuse to write into a folder that already holds files (another run's results)."""
    if not run_dir.is_dir():
        raise LEAError(describe(run_dir, "an existing run folder made by new_run_dir", "no such folder"))
    existing = sorted(p.name for p in run_dir.iterdir())
    if existing:
        raise LEAError(describe(run_dir, "an empty new run folder (results are never overwritten)",
                                f"existing files {existing[:5]}"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """This process's torch / numpy / python RNG states as plain tensors and lists."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# settings a resumed run may change: how long it runs, where and how it reports, where its data and
# starting weights are read from; not how it trains
RESUME_MAY_CHANGE = ("Train.max_steps",) + REPORTING_KEYS + ("Data.path", "Features.cache_dir", "Init.*")


def flatten_config(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config values -> {'Section.key': value} (tuples as lists, as YAML reads them back)."""
    if isinstance(values, dict):
        out = {}
        for key, value in values.items():
            out.update(flatten_config(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: list(values) if isinstance(values, tuple) else values}


def resume_changes(saved: dict, current: dict) -> list[str]:
    """'Key: saved X, now Y' for each setting that differs and that a resumed run cannot honour."""
    before, after = flatten_config(saved), flatten_config(current)
    allowed = [p[:-1] if p.endswith("*") else p for p in RESUME_MAY_CHANGE]
    changes = []
    for key in sorted(set(before) | set(after)):
        if any(key == p or (p.endswith(".") and key.startswith(p)) for p in allowed):
            continue
        if before.get(key) != after.get(key):
            changes.append(f"{key}: saved {before.get(key)!r}, now {after.get(key)!r}")
    return changes


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint (`last.pt`, `step_*.pt`) or a run folder's `last.pt`, loaded safely."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(describe(path, "a run folder with last.pt or a checkpoint file", "nothing there"))
    ckpt = safe_torch_load(path)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(describe(path, f"a training checkpoint with keys {list(CHECKPOINT_KEYS)}",
                                       f"missing {missing}"))
    ckpt["path"] = str(path)
    return ckpt


# ---------------------------------------------------------------------------
# Data order
# ---------------------------------------------------------------------------


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way (after `start` of its samples)."""

    def __init__(self, dataset: Dataset, info: DistInfo, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


def to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def autocast_context(precision: str, device: torch.device):
    """bf16 autocast for precision bf16, or auto on CUDA; otherwise full fp32."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


class Trainer:
    """Runs `stage` for `train.max_steps` optimiser steps, writing into the fresh `run_dir`.

    callbacks: called as `callback(trainer)` after every optimiser step (e.g. to stop early).
    """

    def __init__(self, stage: Stage, run_dir: Path, info: DistInfo, resume: Optional[dict] = None,
                 callbacks: tuple[Callable[["Trainer"], None], ...] = (), log: Callable[[str], None] = print):
        self.stage = stage
        self.log = log  # where the trainer's own messages go (resume notes, the final files written)
        self.cfg = stage.config
        self.train: TrainConfig = self.cfg.train
        self.info = info
        self.run_dir = Path(run_dir)
        self.callbacks = callbacks
        if info.is_main:
            check_fresh_run_dir(self.run_dir)
        self.module = stage.module.to(info.device)
        self.model = wrap_model(self.module, info)
        self.optimizer = build_optimizer(self.module.optimizer_groups(self.train), self.train)
        self.scheduler = build_scheduler(self.optimizer, self.train)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.elapsed_before = 0.0  # seconds of training before this process (a resumed run's checkpoint)
        self.clock_start: Optional[float] = None  # the wall-clock time at which training time was 0
        seed_everything(self.cfg.seed + info.rank)
        self.sampler = ResumableSampler(stage.train_set, info, seed=self.cfg.seed)
        per_rank = self.sampler.num_samples
        if per_rank < self.train.batch_size:
            raise ConfigError(describe("Train.batch_size", f"at most {per_rank} (training samples per process)",
                                       self.train.batch_size))
        self.loader = DataLoader(stage.train_set, batch_size=self.train.batch_size, sampler=self.sampler,
                                 num_workers=self.train.num_workers, drop_last=True,
                                 pin_memory=info.device.type == "cuda",
                                 generator=torch.Generator().manual_seed(self.cfg.seed),
                                 persistent_workers=False)
        if resume is not None:
            self._restore(resume)

    # -- checkpoints --------------------------------------------------------

    def _restore(self, ckpt: dict) -> None:
        where = ckpt.get("path", "resume checkpoint")
        if ckpt.get("kind") != self.stage.kind:
            raise CheckpointError(describe(where, f"a '{self.stage.kind}' training checkpoint",
                                           f"kind {ckpt.get('kind')!r}"))
        self.stage.check_checkpoint(ckpt, where)
        changed = resume_changes(ckpt["config"], to_dict(self.cfg))
        if changed:
            raise ConfigError(describe(f"--resume {where}", "the resumed run's settings (a resumed run continues "
                                       "with its saved optimiser and schedule; only "
                                       f"{', '.join(RESUME_MAY_CHANGE)} may change)",
                                       "; ".join(changed) + ". Drop those --set values, or start a new run "
                                       "(Init.checkpoint) to train with them"))
        try:
            self.module.load_state_dict(ckpt["model"], strict=True)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(describe(where, "weights and optimiser state of this stage's network",
                                           str(e).splitlines()[0])) from e
        self.step = int(ckpt["step"])
        self.elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        if "elapsed_s" not in ckpt and self.info.is_main:
            self.log(f"{where}: records no training time (saved by an earlier version); this run's "
                     "log.csv time_s counts from the resume")
        if self.step >= self.train.max_steps:
            raise ConfigError(describe("Train.max_steps", f"more than the resumed step {self.step} ({where})",
                                       self.train.max_steps))
        rng = ckpt["rng"]
        self.epoch, self.batch_in_epoch = int(rng["epoch"]), int(rng["batch_in_epoch"])
        ranks = rng["ranks"]
        if len(ranks) == self.info.world_size:
            set_rng_state(ranks[self.info.rank])
        elif self.info.is_main:
            self.log(f"{where}: saved by {len(ranks)} process(es), resumed with {self.info.world_size}; "
                     "data order continues, random draws are reseeded")

    def checkpoint(self) -> dict:
        """The full training state (RNG states of every rank gathered on all ranks)."""
        states = [rng_state()]
        if self.info.distributed:
            states = [None] * self.info.world_size
            torch.distributed.all_gather_object(states, rng_state())
        elapsed = time.time() - self.clock_start if self.clock_start is not None else self.elapsed_before
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": self.step, "elapsed_s": round(elapsed, 3),
                "config": to_dict(self.cfg), "kind": self.stage.kind,
                "rng": {"ranks": states, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}}

    def save(self, periodic: bool) -> None:
        ckpt = self.checkpoint()
        if self.info.is_main:
            atomic_torch_save(self.run_dir / LAST_CHECKPOINT, ckpt)
            if periodic:
                atomic_torch_save(self.run_dir / f"step_{self.step:06d}.pt", ckpt)

    # -- data ---------------------------------------------------------------

    def _batches(self) -> Iterator[Any]:
        """Endless stream of batches; (epoch, batch_in_epoch) counts what was handed out."""
        while True:
            self.sampler.set_position(self.epoch, self.batch_in_epoch * self.train.batch_size)
            for batch in self.loader:
                self.batch_in_epoch += 1
                yield to_device(batch, self.info.device)
            self.epoch += 1
            self.batch_in_epoch = 0

    # -- loop ---------------------------------------------------------------

    def _due(self, interval: int) -> bool:
        return self.step == self.train.max_steps or (interval > 0 and self.step % interval == 0)

    def fit(self) -> Optional[Path]:
        """Train to max_steps; return the final model-only file (rank 0) or None."""
        self.clock_start = time.time() - self.elapsed_before
        logger = RunLogger(self.run_dir, self.train.max_steps, self.step, enabled=self.info.is_main,
                           desc=f"{self.stage.kind}", progress=self.train.progress, clock_start=self.clock_start)
        batches = self._batches()
        accum = self.train.grad_accum
        self.model.train()
        try:
            while self.step < self.train.max_steps:
                lr = self.optimizer.param_groups[0]["lr"]
                sums: dict[str, float] = {}
                for micro in range(accum):
                    batch = next(batches)
                    sync = (self.model.no_sync() if self.info.distributed and micro < accum - 1
                            else contextlib.nullcontext())
                    with sync:
                        with autocast_context(self.train.precision, self.info.device):
                            loss, logs = self.model(batch, self.step)
                        (loss / accum).backward()
                    if not torch.isfinite(loss.detach()):
                        raise LEAError(f"{self.stage.kind}: loss is not finite at step {self.step} "
                                       f"({ {k: float(v) for k, v in logs.items()} }); lower Train.lr or "
                                       "check the data")
                    for k, v in logs.items():
                        sums[k] = sums.get(k, 0.0) + float(v) / accum
                if self.train.grad_clip:
                    for group in self.module.clip_groups():
                        torch.nn.utils.clip_grad_norm_(group, self.train.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.step += 1
                self.module.after_step(self.step)
                logger.step(sums)
                if self.step == 1 or self._due(self.train.log_interval):
                    logger.log(self.step, lr, all_reduce_mean(sums, self.info))
                if self._due(self.train.sample_interval) and self.info.is_main:
                    self._sample()
                if self._due(self.train.save_interval):
                    self.save(periodic=self.train.save_interval > 0 and self.step % self.train.save_interval == 0)
                for callback in self.callbacks:
                    callback(self)
        finally:
            logger.close()
        return self._finish()

    def _sample(self) -> None:
        devices = [self.info.device] if self.info.device.type == "cuda" else []
        self.module.eval()
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(SAMPLE_SEED)
            with autocast_context(self.train.precision, self.info.device):
                self.stage.sample(self.module, self.step, self.run_dir / "samples")
        self.module.train()

    def _finish(self) -> Optional[Path]:
        path = None
        if self.info.is_main:
            name, payload = self.stage.final_artifact(self.module)
            path = atomic_torch_save(self.run_dir / name, payload)
            folder = save_pretrained(self.run_dir / Path(name).stem, payload["kind"], payload["model"],
                                     **{k: v for k, v in payload.items() if k not in ("kind", "model")})
            self.log(f"{self.stage.kind}: wrote {path} and {folder}/ (model.safetensors + config.json)")
        barrier(self.info)
        return path
