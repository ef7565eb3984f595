"""Fault matrix, configs and command lines: typos, impossible values, the simulator's own options.

In-process calls check the exit code and message; one subprocess per entry point checks that no
traceback reaches the user.
"""
from __future__ import annotations

import json

import pytest

import train
from datasets.simulate import GROUND_TRUTH_DIR, MANIFEST_FILE, main as simulate_main
from inference.run_lea import main as lea_main
from tests.faults.checks import assert_clear, assert_clean_exit, run_cli, tree_digest
from tests.inference.test_lea_scripts import make_setup
from utils.config import load_config
from utils.errors import ConfigError
from utils.guard import guarded


@pytest.mark.parametrize("option", ["--fmri-ckpt", "--align"])
def test_path_template_typo_on_the_command_line(tmp_path, sim_root, capsys, option):
    config = make_setup(tmp_path, sim_root, "GOD")
    assert lea_main(["--config", str(config), option, str(tmp_path / "{subj}" / "x.pt")], dataset="GOD") == 2
    assert_clear(capsys.readouterr().err, option, "only '{subject}'", "{subj}")
    assert not (tmp_path / "results").exists()


def test_path_template_typo_in_the_config(tmp_path):
    config = tmp_path / "lea.yaml"
    config.write_text("KIND: lea\nCheckpoints:\n  align: checkpoints/align/{sbj}/align.pt\n")
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert_clear(str(err.value), str(config), "Checkpoints.align", "{sbj}")


@pytest.mark.parametrize("override, needle", [
    ("Sampling.num_samples=0", "Sampling.num_samples"),
    ("Sampling.steps=-1", "Sampling.steps"),
    ("Sampling.candidates=0", "Sampling.candidates"),
    ("Align.restandardize=maybe", "Align.restandardize"),
    ("Data.subjects=[]", "Data.subjects"),
    ("Nope.key=1", "Nope"),
])
def test_bad_lea_settings(tmp_path, sim_root, capsys, override, needle):
    config = make_setup(tmp_path, sim_root, "GOD")
    assert lea_main(["--config", str(config), "--set", override], dataset="GOD") == 2
    assert_clear(capsys.readouterr().err, needle)


@pytest.mark.parametrize("override, needle", [
    ("Train.lr=fast", "Train.lr"), ("Train.max_steps=0", "Train.max_steps"), ("Data.dataset=NSD", "NSD"),
])
def test_bad_training_settings(capsys, override, needle):
    argv = ["fmri", "--config", "configs/demo/fmri_GOD.yaml", "--set", override]
    assert guarded(lambda folders: train.main(argv, folders), "train.py") == 2
    assert_clear(capsys.readouterr().err, needle)


def test_training_config_missing(capsys, tmp_path):
    argv = ["tokenizer", "--config", str(tmp_path / "none.yaml")]
    assert guarded(lambda folders: train.main(argv, folders), "train.py") == 2
    assert_clear(capsys.readouterr().err, str(tmp_path / "none.yaml"), "not found")


# -- the simulator -------------------------------------------------------------------------------

def test_simulator_option_errors(tmp_path, capsys):
    assert simulate_main(["--out", str(tmp_path / "a"), "--image-size", "0"]) == 2
    assert_clear(capsys.readouterr().err, "--image-size", "0")
    (tmp_path / "file").write_text("x")
    assert simulate_main(["--out", str(tmp_path / "file")]) == 2
    assert_clear(capsys.readouterr().err, str(tmp_path / "file"), "a file")
    assert simulate_main(["--out", str(tmp_path / "file" / "sub")]) == 2
    assert_clear(capsys.readouterr().err, str(tmp_path / "file"))


def test_simulator_overwrite_never_deletes_what_it_did_not_write(tmp_path, capsys):
    foreign = tmp_path / "mine"
    (foreign / "notes").mkdir(parents=True)
    (foreign / "notes" / "a.txt").write_text("keep me")
    before = tree_digest(foreign)
    assert simulate_main(["--out", str(foreign), "--overwrite"]) == 2
    assert_clear(capsys.readouterr().err, str(foreign), "did not write")
    assert tree_digest(foreign) == before

    sim = tmp_path / "sim"
    assert simulate_main(["--out", str(sim), "--scale", "tiny"]) == 0
    (sim / "notes.txt").write_text("my notes")
    (sim / "ground_truth" / "extra").mkdir()
    before = tree_digest(sim)
    assert simulate_main(["--out", str(sim), "--scale", "tiny", "--overwrite", "--seed", "3"]) == 2
    assert_clear(capsys.readouterr().err, "notes.txt", "ground_truth/extra", "never deletes")
    assert tree_digest(sim) == before
    (sim / "notes.txt").unlink()
    (sim / "ground_truth" / "extra").rmdir()
    assert simulate_main(["--out", str(sim), "--scale", "tiny", "--overwrite", "--seed", "3"]) == 0
    assert json.loads((sim / GROUND_TRUTH_DIR / MANIFEST_FILE).read_text())["seed"] == 3


def test_simulator_cleans_what_a_killed_run_left(tmp_path, capsys):
    """Killed during its folder swap, the simulator leaves hidden folders beside the output; the next run removes them."""
    old = tmp_path / ".sim.old.x1y2" / "sim" / "Kamitani"
    work = tmp_path / ".sim.k3z4" / "ground_truth"
    old.mkdir(parents=True)
    work.mkdir(parents=True)
    unrelated = tmp_path / ".sim.notes"
    unrelated.mkdir()
    (unrelated / "mine.txt").write_text("keep")
    assert simulate_main(["--out", str(tmp_path / "sim"), "--scale", "tiny"]) == 0
    assert not old.parent.parent.exists() and not work.parent.exists()
    assert (unrelated / "mine.txt").read_text() == "keep"
    assert_clear(capsys.readouterr().err, "removed", ".sim.old.x1y2")


# -- no traceback reaches the user ---------------------------------------------------------------

@pytest.mark.slow
def test_entry_points_exit_2_without_traceback(tmp_path, sim_root):
    config = make_setup(tmp_path, sim_root, "GOD")
    assert_clean_exit(run_cli("LEA_GOD.py", "--config", str(config), "--fmri-ckpt", "ck/{subj}.pt"), 2, "{subj}")
    assert_clean_exit(run_cli("train.py", "fmri", "--config", "configs/demo/fmri_GOD.yaml", "--set",
                              "Train.lr=fast"), 2, "Train.lr")
