"""Generic training engine: schedule, parameter groups, accumulation, resume, run folders."""
import math
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from training.distributed import DistInfo
from training.engine import (Stage, TrainModule, Trainer, check_fresh_run_dir, load_checkpoint,
                             start_run_dir)
from training.logger import read_log
from training.optim import lr_at, param_groups
from utils.config import FMRIConfig, TrainConfig
from utils.errors import CheckpointError, ConfigError, LEAError
from utils.io import new_run_dir

IN_DIM, OUT_DIM, NUM_SAMPLES = 6, 3, 64


@dataclass
class ToyModelConfig:
    hidden: int = 16
    dropout: float = 0.1


class ToyModule(TrainModule):
    """Noisy regression with dropout, so that resuming must restore the RNG streams."""

    def __init__(self, cfg: ToyModelConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(IN_DIM, cfg.hidden), nn.LayerNorm(cfg.hidden), nn.GELU(),
                                 nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, OUT_DIM))

    def forward(self, batch, step):
        x, y = batch
        x = x + 0.01 * torch.randn_like(x)
        loss = ((self.net(x) - y) ** 2).mean()
        return loss, {"loss": loss.detach()}


class ToyStage(Stage):
    kind = "toy"

    def __init__(self, config):
        torch.manual_seed(config.seed)
        self.config = config
        self.module = ToyModule(config.model)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(NUM_SAMPLES, IN_DIM, generator=g)
        w = torch.randn(IN_DIM, OUT_DIM, generator=g)
        self.train_set = TensorDataset(x, x @ w)
        self.samples_written = []

    def sample(self, module, step, out_dir):
        self.samples_written.append(step)

    def final_artifact(self, module):
        return "toy.pt", {"model": module.state_dict(), "kind": self.kind}


def toy_config(tmp_path: Path, **train) -> FMRIConfig:
    base = dict(lr=1e-2, warmup_steps=2, max_steps=6, batch_size=8, grad_clip=1.0, log_interval=1,
                sample_interval=3, save_interval=2, out_dir=str(Path(tmp_path) / "runs"), weight_decay=0.01)
    base.update(train)
    return FMRIConfig(name="toy", model=ToyModelConfig(), train=TrainConfig(**base))


def run(cfg, resume=None, callbacks=()):
    stage = ToyStage(cfg)
    info = DistInfo()
    run_dir = start_run_dir(cfg.train.out_dir, cfg.name, info)
    trainer = Trainer(stage, run_dir, info, resume=resume, callbacks=callbacks)
    trainer.fit()
    return trainer, stage


def test_schedule_values():
    t = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=4, max_steps=14, schedule="linear")
    assert [lr_at(s, t) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, t) == pytest.approx(1.0)
    assert lr_at(9, t) == pytest.approx(0.55)
    assert lr_at(14, t) == pytest.approx(0.1)
    cos = replace(t, schedule="cosine")
    assert lr_at(9, cos) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(14, cos) == pytest.approx(0.1)
    assert lr_at(10, replace(t, schedule="constant")) == 1.0


def test_no_weight_decay_on_biases_norms_tokens():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
            self.proj = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)
            self.emb = nn.Embedding(5, 8)

    net = Net()
    decay, no_decay = param_groups(net.named_parameters(), net, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([8, 8])]
    assert len(no_decay["params"]) == 6


def test_trainer_writes_log_checkpoints_samples_and_lr_follows_schedule(tmp_path):
    cfg = toy_config(tmp_path)
    trainer, stage = run(cfg)
    files = sorted(p.name for p in trainer.run_dir.iterdir())
    assert {"last.pt", "step_000002.pt", "step_000004.pt", "step_000006.pt", "toy.pt", "log.csv"} <= set(files)
    assert stage.samples_written == [3, 6]
    rows = read_log(trainer.run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in rows] == pytest.approx([lr_at(s, cfg.train) for s in range(6)])
    ckpt = load_checkpoint(trainer.run_dir)
    assert ckpt["step"] == 6 and ckpt["kind"] == "toy" and ckpt["config"]["NAME"] == "toy"
    assert ckpt["rng"]["epoch"] == 0 and ckpt["rng"]["batch_in_epoch"] == 6


def test_gradient_accumulation_matches_large_batch(tmp_path):
    one = toy_config(tmp_path / "a", batch_size=16, grad_accum=1)
    two = toy_config(tmp_path / "b", batch_size=8, grad_accum=2)
    one.model = two.model = ToyModelConfig(dropout=0.0)
    ta, _ = run(one)
    tb, _ = run(two)
    for (name, a), b in zip(ta.module.state_dict().items(), tb.module.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


class Interrupt(Exception):
    pass


def test_resume_is_bit_for_bit(tmp_path):
    # 11 steps of batch 8 over 64 samples cross an epoch boundary (8 batches per epoch).
    cfg = toy_config(tmp_path, max_steps=11, save_interval=5)
    full, _ = run(cfg)

    def stop_at_5(trainer):
        if trainer.step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(cfg, callbacks=(stop_at_5,))
    first = sorted(Path(cfg.train.out_dir).iterdir())[-1]
    assert (first / "last.pt").is_file()
    ckpt = load_checkpoint(first)
    assert ckpt["elapsed_s"] > 0
    ckpt["elapsed_s"] = 1000.0                              # as if the first 5 steps had taken 1000 s
    resumed, _ = run(cfg, resume=ckpt)
    assert resumed.run_dir != first
    for (name, a), b in zip(full.module.state_dict().items(), resumed.module.state_dict().values()):
        assert torch.equal(a, b), name
    rows = read_log(resumed.run_dir)
    assert rows[0]["step"] == 6
    assert 1000 <= rows[0]["time_s"] < 1060                # training time goes on across the resume
    assert load_checkpoint(resumed.run_dir)["elapsed_s"] >= rows[-1]["time_s"]


def test_a_checkpoint_without_training_time_resumes_with_a_note(tmp_path):
    cfg = toy_config(tmp_path, max_steps=2)
    trainer, _ = run(cfg)
    ckpt = load_checkpoint(trainer.run_dir)
    del ckpt["elapsed_s"]                                   # as saved before checkpoints recorded it
    notes = []
    resumed = Trainer(ToyStage(toy_config(tmp_path, max_steps=4)), new_run_dir(tmp_path, "r"), DistInfo(),
                      resume=ckpt, log=notes.append)
    resumed.fit()
    assert any("records no training time" in n for n in notes)
    assert read_log(resumed.run_dir)[0]["time_s"] < 60     # counts from the resume


def test_loss_falls(tmp_path):
    cfg = toy_config(tmp_path, max_steps=60, lr=3e-2, warmup_steps=5, save_interval=0)
    cfg.model = ToyModelConfig(dropout=0.0)
    trainer, _ = run(cfg)
    rows = read_log(trainer.run_dir)
    assert rows[-1]["loss"] < 0.3 * rows[0]["loss"]


def test_refuses_existing_run_folder(tmp_path):
    run_dir = new_run_dir(tmp_path, "x")
    (run_dir / "last.pt").write_bytes(b"old result")
    with pytest.raises(LEAError, match="never overwritten"):
        check_fresh_run_dir(run_dir)
    with pytest.raises(LEAError, match="existing files"):
        Trainer(ToyStage(toy_config(tmp_path)), run_dir, DistInfo())


def test_resume_errors(tmp_path):
    with pytest.raises(CheckpointError, match="nothing there"):
        load_checkpoint(tmp_path / "no_such_run")
    cfg = toy_config(tmp_path, max_steps=2)
    trainer, _ = run(cfg)
    ckpt = load_checkpoint(trainer.run_dir)
    wider = toy_config(tmp_path, max_steps=4)
    wider.model = ToyModelConfig(hidden=32)
    with pytest.raises(CheckpointError, match="hidden"):
        run(wider, resume=ckpt)
    with pytest.raises(ConfigError, match="max_steps"):
        run(cfg, resume=load_checkpoint(trainer.run_dir))
    ckpt["kind"] = "tokenizer"
    with pytest.raises(CheckpointError, match="'toy' training checkpoint"):
        run(toy_config(tmp_path, max_steps=4), resume=ckpt)


def test_batch_larger_than_dataset_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        run(toy_config(tmp_path, batch_size=NUM_SAMPLES + 1))
