"""Fault matrix, data files: truncated, corrupted, foreign or inconsistent inputs on the tiny simulated tree.

Each case must end in a DataError naming the file (and key), what was expected and what was found,
or, for derived caches, in a note and a recomputation; never a wrong result or a traceback.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import load_subject
from datasets.bold5000 import BETAS_DIR, BETAS_FILE, IMG_DICT_FILE, load_bold5000
from datasets.god import IMAGES_FILE, REPEATS_KEY, TEST_KEY, load_god
from models.image_features import build_image_features, cached_features
from inference.run_lea import main as lea_main
from tests.faults.checks import CreatesFile, assert_clear
from tests.inference.test_lea_scripts import make_setup
from utils.errors import DataError
from utils.guard import INCOMPLETE_NOTE

GOD_SUBJECT, BOLD_SUBJECT = "sbj_1", "CSI1"


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def scramble(path: Path, start: int = 200, length: int = 64) -> None:
    data = bytearray(path.read_bytes())
    data[start:start + length] = b"\xff" * length
    path.write_bytes(bytes(data))


def rewrite_npz(path: Path, **changes: np.ndarray) -> None:
    """Rewrite `path` with some arrays replaced, keeping the key order (ROI masks first)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    np.savez(path, **arrays)


# -- GOD ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage, found", [
    (truncate, "truncated or corrupted"),                              # interrupted download
    (scramble, "truncated or corrupted"),                              # corrupted bytes inside a member
    (lambda p: p.write_bytes(pickle.dumps({"arr_0": [1, 2]})), "not an array file"),   # a pickle
    (lambda p: p.write_bytes(b""), "truncated or corrupted"),
])
def test_god_subject_file_damaged(god_copy, damage, found):
    path = god_copy / f"{GOD_SUBJECT}.npz"
    damage(path)
    with pytest.raises(DataError) as err:
        load_god(god_copy, GOD_SUBJECT)
    assert_clear(str(err.value), str(path), "expected", found)


def test_god_images_file_truncated(god_copy):
    truncate(god_copy / IMAGES_FILE, 0.7)
    with pytest.raises(DataError) as err:
        load_god(god_copy, GOD_SUBJECT)
    assert_clear(str(err.value), IMAGES_FILE, "truncated or corrupted")


def test_god_repeats_not_grouped_by_test_image(god_copy):
    """arr_1 rows in another order than arr_2's images would be averaged wrongly: refused."""
    path = god_copy / f"{GOD_SUBJECT}.npz"
    with np.load(path) as npz:
        repeats = npz[REPEATS_KEY]
    rows = np.random.default_rng(0).permutation(len(repeats))
    rewrite_npz(path, **{REPEATS_KEY: repeats[rows]})
    with pytest.raises(DataError) as err:
        load_god(god_copy, GOD_SUBJECT)
    assert_clear(str(err.value), str(path), f"'{REPEATS_KEY}'", f"'{TEST_KEY}'", "grouped by test image", "differs")


def test_god_repeats_in_repeat_major_order_are_read_as_such(god_copy, sim_root):
    """Repeats stored run by run (row r*N + i shows image i) are recognised, not averaged wrongly."""
    path = god_copy / f"{GOD_SUBJECT}.npz"
    reference = load_god(god_copy, GOD_SUBJECT)
    with np.load(path) as npz:
        repeats, averaged = npz[REPEATS_KEY], npz[TEST_KEY]
    per_image = len(repeats) // len(averaged)
    order = np.arange(len(repeats)).reshape(len(averaged), per_image).T.reshape(-1)  # grouped -> repeat-major
    rewrite_npz(path, **{REPEATS_KEY: repeats[order]})
    data = load_god(god_copy, GOD_SUBJECT)
    for image in range(len(averaged)):
        mean = data.test_fmri_repeats[data.test_repeat_index == image].mean(axis=0)
        np.testing.assert_allclose(mean, reference.test_fmri[image], atol=1e-4)


# -- BOLD5000 ----------------------------------------------------------------------------------

def beta_file(root: Path, hemi: str, roi: str) -> Path:
    return root / BETAS_DIR / BETAS_FILE.format(subject=BOLD_SUBJECT, hemi=hemi, roi=roi)


def test_bold_missing_hemisphere_is_an_error_not_a_smaller_roi(bold_copy):
    missing = beta_file(bold_copy, "RH", "LOC")
    missing.unlink()
    with pytest.raises(DataError) as err:
        load_bold5000(bold_copy, BOLD_SUBJECT)
    assert_clear(str(err.value), str(missing), "both hemispheres", "no such file")


@pytest.mark.parametrize("damage", [lambda p: truncate(p, 0.6), lambda p: p.write_bytes(b"\x93NUMPY garbage")])
def test_bold_beta_file_damaged(bold_copy, damage):
    path = beta_file(bold_copy, "LH", "EarlyVis")
    damage(path)
    with pytest.raises(DataError) as err:
        load_bold5000(bold_copy, BOLD_SUBJECT)
    assert_clear(str(err.value), str(path), "expected")


def test_bold_image_dict_that_would_run_code_is_refused(bold_copy, tmp_path):
    marker = tmp_path / "executed"
    path = bold_copy / IMG_DICT_FILE
    np.save(path, np.array({"a.jpg": CreatesFile(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(DataError) as err:
        load_subject("BOLD5000", bold_copy, BOLD_SUBJECT)
    assert_clear(str(err.value), str(path), "not admitted")
    assert not marker.exists()


def test_bold_image_dict_truncated(bold_copy):
    path = bold_copy / IMG_DICT_FILE
    truncate(path, 0.5)
    with pytest.raises(DataError) as err:
        load_subject("BOLD5000", bold_copy, BOLD_SUBJECT)
    assert_clear(str(err.value), str(path))


# -- derived caches ----------------------------------------------------------------------------

@pytest.mark.parametrize("damage", [truncate, lambda p: np.save(p, np.zeros((2, 3), np.float32))])
def test_damaged_feature_cache_is_discarded_and_recomputed(tmp_path, capsys, damage):
    extractor = build_image_features("handcrafted", dim=16, normalize=True)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    fresh = cached_features(extractor, images, tmp_path, "stimuli", progress=False)
    (cache,) = tmp_path.glob("stimuli_*.npy")
    damage(cache)
    again = cached_features(extractor, images, tmp_path, "stimuli", progress=False)
    torch.testing.assert_close(again, fresh)
    assert_clear(capsys.readouterr().err, "discarding the cache", str(cache), "recomputing")
    assert np.load(cache).shape == tuple(fresh.shape)    # rewritten, whole


# -- end to end: the script says it, exit code 2, no traceback ---------------------------------

def test_truncated_subject_file_through_the_script(sim_root, god_copy, tmp_path, capsys):
    """What an interrupted download gives: a clear error, and the started results folder marked incomplete."""
    config = make_setup(tmp_path, sim_root, "GOD")
    path = god_copy / f"{GOD_SUBJECT}.npz"
    truncate(path)
    assert lea_main(["--config", str(config), "--set", f"Data.path={god_copy}", "--device", "cpu",
                     "--no-progress"], dataset="GOD") == 2
    (run,) = (tmp_path / "results").iterdir()
    assert_clear(capsys.readouterr().err, str(path), "truncated or corrupted", f"partial results: {run}")
    assert_clear((run / INCOMPLETE_NOTE).read_text(), "NOT a finished result", str(path))
