"""Fault matrix, interrupts: Ctrl-C in the LEA scripts and in training, and `kill -9` during training.

Ctrl-C ends with exit code 130, no traceback, a note where the partial results are (marked with
INCOMPLETE.txt) and how to go on; a training run killed outright resumes to bit-identical weights.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import inference.run_lea
import train
from datasets.simulate import GOD_DIR
from inference.run_lea import main as lea_main
from tests.faults.checks import EXIT_INTERRUPTED, REPO, assert_clear
from tests.inference.test_lea_scripts import make_setup
from tests.training.test_train_stages import TINY_FMRI
from training.engine import LAST_CHECKPOINT, load_checkpoint
from utils.guard import INCOMPLETE_NOTE

POLL_S = 0.05
WAIT_S = 240
STEADY = ["Train.schedule=constant", "Train.warmup_steps=0", "Train.batch_size=4", "Train.save_interval=1",
          "Train.log_interval=1", "Train.sample_interval=0"]   # lr independent of max_steps


@pytest.mark.slow
def test_ctrl_c_in_lea_script(tmp_path, sim_root, capsys, monkeypatch):
    config = make_setup(tmp_path, sim_root, "GOD")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(inference.run_lea, "save_png", interrupted)   # Ctrl-C after the heads were fitted and saved
        assert lea_main(["--config", str(config), "--device", "cpu", "--no-progress"],
                        dataset="GOD") == EXIT_INTERRUPTED
    (run,) = (tmp_path / "results").iterdir()
    err = capsys.readouterr().err
    reuse = f"--align {run}/{{subject}}/align.pt"
    assert_clear(err, "LEA_GOD.py: interrupted (Ctrl-C)", f"partial results: {run}", "run the command again", reuse)
    assert_clear((run / INCOMPLETE_NOTE).read_text(), "NOT a finished result", "interrupted (Ctrl-C)")
    # going on as the note says: a new folder, the fitted heads reused, the interrupted folder left as it was
    assert lea_main(["--config", str(config), "--device", "cpu", "--no-progress", *reuse.split()], dataset="GOD") == 0
    (second,) = set((tmp_path / "results").iterdir()) - {run}
    assert not (second / INCOMPLETE_NOTE).exists() and (run / INCOMPLETE_NOTE).exists()
    assert not (second / "sbj_1" / "align.pt").exists()     # loaded from the first folder, not fitted again


def fmri_args(sim_root: Path, tmp: Path, *extra: str) -> list[str]:
    args = ["fmri", "--config", "configs/demo/fmri_GOD.yaml", "--device", "cpu"]
    for value in [f"Data.path={sim_root / GOD_DIR}", f"Features.cache_dir={tmp / 'cache'}",
                  f"Train.out_dir={tmp / 'runs'}", *TINY_FMRI, *STEADY, *extra]:
        args += ["--set", value]
    return args


def default_ctrl_c() -> None:
    """In the child: Ctrl-C as in a terminal. A test run started in the background (`make test &`)
    ignores SIGINT, and a child inherits that, so Python would install no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_and_wait_for_checkpoint(args: list[str], runs: Path) -> tuple[subprocess.Popen, Path]:
    """Start train.py in the background; return it and its run folder once its first last.pt exists."""
    process = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                               preexec_fn=default_ctrl_c)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = list(runs.glob(f"*/{LAST_CHECKPOINT}")) if runs.is_dir() else []
        if found:
            return process, found[0].parent
        assert process.poll() is None, process.communicate()
        time.sleep(POLL_S)
    process.kill()
    pytest.fail("training wrote no checkpoint in time")


@pytest.mark.slow
def test_ctrl_c_in_training(tmp_path, sim_root):
    process, run = start_and_wait_for_checkpoint(fmri_args(sim_root, tmp_path, "Train.max_steps=100000"),
                                                 tmp_path / "runs")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=WAIT_S)
    assert process.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert_clear(err, "train.py: interrupted (Ctrl-C)", f"partial results: {run}", f"--resume {run}")
    assert_clear((run / INCOMPLETE_NOTE).read_text(), "interrupted (Ctrl-C)", f"--resume {run}")


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_identical(tmp_path, sim_root):
    process, killed = start_and_wait_for_checkpoint(fmri_args(sim_root, tmp_path, "Train.max_steps=100000"),
                                                    tmp_path / "runs")
    process.kill()                                                   # SIGKILL: no handler runs
    process.communicate()
    stop = load_checkpoint(killed)["step"] + 2
    assert train.main(fmri_args(sim_root, tmp_path, f"Train.max_steps={stop}", f"Train.out_dir={tmp_path / 'ref'}")) == 0
    assert train.main(fmri_args(sim_root, tmp_path, f"Train.max_steps={stop}", f"Train.out_dir={tmp_path / 'res'}")
                      + ["--resume", str(killed)]) == 0
    (reference,) = (tmp_path / "ref").glob("*/fmri_autoencoder.pt")
    (resumed,) = (tmp_path / "res").glob("*/fmri_autoencoder.pt")
    a, b = torch.load(reference, weights_only=True)["model"], torch.load(resumed, weights_only=True)["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
