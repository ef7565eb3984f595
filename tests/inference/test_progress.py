"""Progress bars: off with --no-progress, and whenever stdout or stderr is not a terminal, in every
stage the scripts start (the demo's training stages included); logs keep their lines."""
from __future__ import annotations

import sys

import pytest
import yaml

from datasets.simulate import GOD_DIR
from inference.demo import train_stage
from utils.io import progress_wanted

TINY_TOKENIZER = ["Model.ch_base=32", "Model.ch_mult=[1,2,2]", "Model.resolution=32", "Data.image_size=32",
                  "Loss.disc_start=1", "Train.max_steps=2",
                  "Train.batch_size=4", "Train.warmup_steps=1", "Train.sample_interval=2", "Train.save_interval=2"]
BAR_MARK = "it/s]"  # what every tqdm refresh prints


def pretend_terminal(monkeypatch) -> None:
    """Make the current stdout and stderr say they are terminals (call inside the test: pytest
    swaps the streams in only when the test starts)."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)


def test_bars_need_a_request_and_a_terminal(monkeypatch):
    pretend_terminal(monkeypatch)
    assert progress_wanted(True) and not progress_wanted(False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert not progress_wanted(True)


@pytest.mark.parametrize("progress", [True, False])
def test_demo_training_stages_follow_no_progress(progress, sim_root, tmp_path, capsys, monkeypatch):
    pretend_terminal(monkeypatch)
    overrides = [f"Data.path={sim_root / GOD_DIR}", "Data.image_folder=null",  # the stimuli, not the demo's pool
                 f"Train.out_dir={tmp_path}", *TINY_TOKENIZER]
    final = train_stage("tokenizer", "configs/demo/tokenizer.yaml", overrides, print, progress=progress)
    err = capsys.readouterr().err
    assert (BAR_MARK in err) == progress
    assert yaml.safe_load((final.parent / "config.yaml").read_text())["Train"]["progress"] is progress
    assert (final.parent / "log.csv").read_text().count("\n") >= 2     # the CSV log is written either way
