"""Two CPU processes (gloo) train the toy stage with DistributedDataParallel."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests.training.test_engine import ToyModelConfig, ToyStage, toy_config
from training.distributed import cleanup_distributed, init_distributed
from training.engine import Trainer, load_checkpoint, start_run_dir

WORLD_SIZE = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, port: int, tmp_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD_SIZE),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    try:
        cfg = toy_config(tmp_path, max_steps=5, save_interval=5, grad_accum=2, batch_size=4)
        stage = ToyStage(cfg)
        run_dir = start_run_dir(cfg.train.out_dir, cfg.name, info)
        trainer = Trainer(stage, run_dir, info)
        trainer.fit()
        torch.save({"state": trainer.module.state_dict(), "run_dir": str(run_dir),
                    "shard": trainer.sampler.num_samples},
                   os.path.join(tmp_path, f"rank{rank}.pt"))
    finally:
        cleanup_distributed()


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    assert ranks[0]["run_dir"] == ranks[1]["run_dir"]
    assert ranks[0]["shard"] == ranks[1]["shard"] == 32  # each rank reads half of the 64 samples
    saved = load_checkpoint(ranks[0]["run_dir"])
    assert saved["step"] == 5 and len(saved["rng"]["ranks"]) == WORLD_SIZE
    initial = ToyStage(toy_config(tmp_path)).module.state_dict()
    for name, w0 in ranks[0]["state"].items():
        assert torch.equal(w0, ranks[1]["state"][name]), name
        assert torch.equal(w0, saved["model"][name]), name
    assert any(not torch.equal(w, initial[n]) for n, w in ranks[0]["state"].items())
