"""Fault matrix, checkpoints: damaged files, files that would run code, weights of another subject or run.

Every refusal is a CheckpointError in this project's words (never torch's advice to turn the safety off),
and a file that would run code on loading leaves no trace.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datasets import load_subject
from datasets.simulate import GOD_DIR
from evaluation.classifier import classifier_or_reason
from models.alignment import AlignmentHeads
from models.checkpoints import safe_torch_load
from models.lea import check_fmri_fits, load_trained_network
from inference.run_lea import main as lea_main
from tests.faults.checks import CreatesFile, assert_clear
from tests.inference.test_lea_scripts import make_setup
from tests.models.test_lea_pipeline import tiny_configs, write_model_file
from tests.training.test_engine import run as run_toy, toy_config
from training.engine import load_checkpoint, resume_changes
from utils.errors import CheckpointError, ConfigError
from utils.io import atomic_torch_save

KIND = "fmri_autoencoder"


@pytest.fixture
def model_file(tmp_path) -> Path:
    return write_model_file(tmp_path / "fmri_autoencoder.pt", KIND, tiny_configs()[KIND])


@pytest.mark.parametrize("damage, found", [
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated or corrupted"),
    (lambda p: p.write_bytes(b"not a checkpoint" * 20), "not one"),
    (lambda p: p.write_bytes(b""), "truncated or corrupted"),
])
def test_damaged_model_file(model_file, damage, found):
    damage(model_file)
    with pytest.raises(CheckpointError) as err:
        load_trained_network(KIND, model_file)
    assert_clear(str(err.value), str(model_file), found)


LOADERS = {  # where a checkpoint enters: model files, --resume, --align, Init.*, classifier weights
    "model file": lambda p: load_trained_network(KIND, p),
    "--resume": load_checkpoint,
    "--align": AlignmentHeads.load,
    "Init.* / any state dict": safe_torch_load,
    "--classifier-weights": classifier_or_reason,
}


@pytest.mark.parametrize("entry", list(LOADERS))
def test_checkpoint_that_would_run_code_is_refused(tmp_path, entry):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"model": CreatesFile(marker), "kind": KIND}, path)
    with pytest.raises(CheckpointError) as err:
        LOADERS[entry](path)
    assert_clear(str(err.value), str(path), "refused", "io.open")
    assert not marker.exists()


def test_missing_classifier_weights_is_an_error_not_a_skipped_metric(tmp_path):
    with pytest.raises(CheckpointError) as err:
        classifier_or_reason(tmp_path / "vit_h_14_swag-80465313.pth")
    assert_clear(str(err.value), "vit_h_14_swag-80465313.pth", "no such file")


def test_fmri_checkpoint_of_another_subject_with_the_same_voxel_count(tmp_path, sim_root):
    data = load_subject("GOD", sim_root / GOD_DIR, "sbj_1")
    config = tiny_configs(data.roi_patch)[KIND]
    path = write_model_file(tmp_path / "sbj_2.pt", KIND, config)
    payload = torch.load(path, weights_only=True)
    atomic_torch_save(path, {**payload, "dataset": "GOD", "subject": "sbj_2"})
    model = load_trained_network(KIND, path)
    check_fmri_fits(model, data.roi_patch, str(path), "sbj_1")        # the shapes alone would pass
    with pytest.raises(CheckpointError) as err:
        load_trained_network(KIND, path, expect={"dataset": "GOD", "subject": "sbj_1"})
    assert_clear(str(err.value), str(path), "'subject'", "'sbj_1'", "'sbj_2'")


def test_script_refuses_fmri_checkpoint_of_another_subject(tmp_path, sim_root, capsys):
    config = make_setup(tmp_path, sim_root, "GOD")
    path = tmp_path / "checkpoints" / "fmri" / "sbj_1" / "fmri_autoencoder.pt"
    atomic_torch_save(path, {**torch.load(path, weights_only=True), "dataset": "GOD", "subject": "sbj_3"})
    assert lea_main(["--config", str(config), "--device", "cpu", "--no-progress"], dataset="GOD") == 2
    assert_clear(capsys.readouterr().err, str(path), "'sbj_3'")


def test_resume_refuses_settings_it_cannot_honour(tmp_path):
    cfg = toy_config(tmp_path, max_steps=4, save_interval=2)
    first, _ = run_toy(cfg)
    changed = toy_config(tmp_path, max_steps=8, save_interval=2, lr=0.1)
    with pytest.raises(ConfigError) as err:
        run_toy(changed, resume=load_checkpoint(first.run_dir))
    assert_clear(str(err.value), "--resume", "Train.lr: saved 0.01, now 0.1", "Train.max_steps")
    longer = toy_config(tmp_path, max_steps=8, save_interval=2)      # max_steps may change
    resumed, _ = run_toy(longer, resume=load_checkpoint(first.run_dir))
    assert resumed.step == 8


def test_resume_changes_lists_only_what_matters():
    saved = {"Train": {"lr": 1e-3, "max_steps": 10, "betas": (0.9, 0.95)}, "Init": {"checkpoint": "a.pt"},
             "Model": {"embed_dim": 16}}
    assert resume_changes(saved, {"Train": {"lr": 1e-3, "max_steps": 20, "betas": [0.9, 0.95]},
                                  "Init": {"checkpoint": None}, "Model": {"embed_dim": 16}}) == []
    # a run started in a terminal (progress bars) resumes under nohup (train.py turns them off)
    bars = {"Train": {"lr": 1e-3, "progress": True}}
    assert resume_changes(bars, {"Train": {"lr": 1e-3, "progress": False}}) == []
    assert resume_changes(saved, {"Train": {"lr": 1e-3, "max_steps": 10, "betas": [0.9, 0.99]},
                                  "Init": {"checkpoint": "a.pt"}, "Model": {"embed_dim": 32}}) == [
        "Model.embed_dim: saved 16, now 32", "Train.betas: saved [0.9, 0.95], now [0.9, 0.99]"]
