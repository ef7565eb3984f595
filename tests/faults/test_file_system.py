"""Fault matrix, file system: output folders that are files, under files, not writable; a full disk and a
folder made read-only in the middle of a run. Each ends with exit code 2 and a message naming the path;
earlier results are left exactly as they were, and a started results folder is marked incomplete.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import train
import utils.io
from inference.run_lea import main as lea_main
from tests.faults.checks import assert_clear, tree_digest
from tests.inference.test_lea_scripts import make_setup
from utils.errors import OutputError
from utils.guard import INCOMPLETE_NOTE, guarded
from utils.io import atomic_write_text, ensure_output_dir, new_run_dir

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def lea_setup(sim_root, tmp_path_factory):
    """A finished LEA run (its folder is the 'earlier result' no fault may touch) and its config."""
    root = tmp_path_factory.mktemp("lea_fs")
    config = make_setup(root, sim_root, "GOD")
    assert lea_main(["--config", str(config), "--device", "cpu", "--no-progress"], dataset="GOD") == 0
    (earlier,) = (root / "results").iterdir()
    return config, earlier


def _results(config: Path) -> list[Path]:
    return sorted((config.parent / "results").iterdir())


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_out_is_a_file_or_under_one(lea_setup, tmp_path, capsys, where):
    config, earlier = lea_setup
    before = tree_digest(earlier)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "results"
    assert lea_main(["--config", str(config), "--out", str(out), "--no-progress"], dataset="GOD") == 2
    assert_clear(capsys.readouterr().err, str(blocker), "a file")
    assert blocker.read_text() == "not a folder" and tree_digest(earlier) == before


def test_train_out_dir_under_a_file(sim_root, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    argv = ["tokenizer", "--config", "configs/demo/tokenizer.yaml", "--device", "cpu",
            "--set", f"Data.path={sim_root / 'Kamitani' / 'npz'}", "--set", f"Train.out_dir={blocker / 'runs'}"]
    assert guarded(lambda folders: train.main(argv, folders), "train.py") == 2
    assert_clear(capsys.readouterr().err, str(blocker), "a file")


@pytest.mark.skipif(IS_ROOT, reason="permissions do not stop root")
def test_out_not_writable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError) as err:
            new_run_dir(locked / "results", "run")
        assert_clear(str(err.value), str(locked))
    finally:
        locked.chmod(0o700)


def test_out_not_writable_reported_before_any_work(tmp_path, monkeypatch):
    """The permission check itself (also where permissions do not apply to this test's user)."""
    monkeypatch.setattr(utils.io.os, "access", lambda path, mode: False)
    with pytest.raises(OutputError) as err:
        ensure_output_dir(tmp_path / "results")
    assert_clear(str(err.value), str(tmp_path / "results"), "no write permission")


def failing_at(call: int, error: OSError, real, persistent: bool = False):
    """A stand-in for `real` that raises `error` on its `call`-th use (and every later one when `persistent`)."""
    count = {"n": 0}

    def fake(*args, **kwargs):
        count["n"] += 1
        if count["n"] == call or (persistent and count["n"] > call):
            raise error
        return real(*args, **kwargs)
    return fake


@pytest.mark.parametrize("target, error, found", [
    ("fsync", OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    ("mkstemp", PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),  # folder made read-only
    ("mkstemp", OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
])
def test_write_fault_mid_run(lea_setup, capsys, monkeypatch, target, error, found):
    config, earlier = lea_setup
    before, runs_before = tree_digest(earlier), _results(config)
    module = utils.io.os if target == "fsync" else utils.io.tempfile
    monkeypatch.setattr(module, target, failing_at(2, error, getattr(module, target)))  # after config.yaml
    assert lea_main(["--config", str(config), "--device", "cpu", "--no-progress"], dataset="GOD") == 2
    err = capsys.readouterr().err
    assert_clear(err, "error:", found, "partial results")
    (new,) = set(_results(config)) - set(runs_before)
    assert_clear((new / INCOMPLETE_NOTE).read_text(), "NOT a finished result", found)
    assert tree_digest(earlier) == before


def test_incomplete_note_that_cannot_be_written_is_said(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()

    def body(folders):
        folders.started(folder, "run it again")
        monkeypatch.setattr(utils.io.tempfile, "mkstemp",
                            failing_at(1, PermissionError(errno.EACCES, "Permission denied"), utils.io.tempfile.mkstemp,
                                           persistent=True))
        atomic_write_text(folder / "metrics.json", "{}")

    assert guarded(body, "LEA_GOD.py") == 2
    err = capsys.readouterr().err
    assert_clear(err, str(folder / "metrics.json"), "Permission denied", "NOT a finished result",
                 f"could not write {INCOMPLETE_NOTE}")
    assert not list(folder.iterdir())   # no half-written file left behind
