"""BOLD5000 loader and the restricted unpickler: round trip, and one clear error per bad input."""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format
import pytest

from datasets import bold5000 as bold
from datasets import load_subject
from datasets.bold5000 import load_bold5000
from datasets.safe_pickle import load_pickled_npy, restricted_loads
from datasets.simulate import BOLD_DIR, GROUND_TRUTH_DIR, SCALES
from utils.errors import ConfigError, DataError

TINY = SCALES["tiny"]
PARTIAL = TINY.bold_partial_subject


@pytest.fixture(scope="module")
def csi1(sim_root):
    return load_bold5000(sim_root / BOLD_DIR, "CSI1")


def _ground_truth(sim_root: Path, subject: str):
    return np.load(sim_root / GROUND_TRUTH_DIR / "BOLD5000" / f"{subject}.npz")


def _beta_path(root: Path, subject: str, hemi: str, roi: str) -> Path:
    return root / bold.BETAS_DIR / bold.BETAS_FILE.format(subject=subject, hemi=hemi, roi=roi)


def test_groups_splits_and_normalisation(csi1, sim_root):
    gt = _ground_truth(sim_root, "CSI1")
    assert csi1.roi_names == list(bold.BOLD_ROIS)
    assert csi1.roi_patch == np.bincount(gt["voxel_roi"]).tolist()
    assert csi1.train_fmri.shape == (TINY.bold_train_images, sum(csi1.roi_patch))
    assert csi1.test_fmri.shape[0] == TINY.bold_test_images == len(csi1.test_images)
    assert csi1.test_fmri_repeats.shape[0] == TINY.bold_test_images * TINY.bold_test_repeats
    assert abs(float(csi1.train_fmri.mean())) < 1e-4
    assert float(csi1.train_fmri.std()) == pytest.approx(1.0, abs=1e-4)
    averaged = np.stack([csi1.test_fmri_repeats[csi1.test_repeat_index == i].mean(0)
                         for i in range(len(csi1.test_fmri))])
    np.testing.assert_allclose(averaged, csi1.test_fmri, atol=1e-4)
    assert csi1.train_labels is None and csi1.test_labels is None


def test_trials_images_and_ground_truth_align(csi1, sim_root):
    gt = _ground_truth(sim_root, "CSI1")
    names = list(gt["image_names"])
    images = load_pickled_npy(sim_root / BOLD_DIR / bold.IMG_DICT_FILE)
    repeated = (sim_root / BOLD_DIR / bold.REPEATED_FILE).read_text().split()
    assert csi1.source["test_image_names"] == repeated
    for i, name in enumerate(csi1.source["test_image_names"]):
        np.testing.assert_array_equal(csi1.test_images[i], images[name])
    # Each train trial's image is the one the ground truth says was shown at that trial.
    trial_names = [names[i] for i in gt["trial_image"]]
    train_trials = [t for t, n in enumerate(trial_names) if n not in set(repeated)]
    shown = [csi1.source["train_image_names"][i] for i in csi1.train_image_index]
    assert shown == [trial_names[t] for t in train_trials]
    clean = gt["image_clean"][gt["trial_image"][train_trials]]
    measured = csi1.train_fmri * csi1.norm_std + csi1.norm_mean
    noise = (measured - clean) / gt["noise_sd"]
    assert float((noise ** 2).mean()) == pytest.approx(1.0, abs=0.1)


def test_partial_subject_skips_unseen_test_images(sim_root):
    data = load_subject("BOLD5000", sim_root / BOLD_DIR, PARTIAL)
    expected_rois = [r for r in bold.BOLD_ROIS if r != "LOC"]
    assert data.roi_names == expected_rois and len(data.roi_patch) == 4
    seen_test = TINY.bold_test_images - TINY.bold_partial_unseen_test
    assert data.test_fmri.shape[0] == seen_test
    assert len(data.train_fmri) == round(TINY.bold_partial_fraction * TINY.bold_train_images)
    everything = load_bold5000(sim_root / BOLD_DIR, PARTIAL, stats_from="all", include_repeats=False)
    assert everything.norm_mean != data.norm_mean and everything.test_fmri_repeats is None


def test_roi_patch_from_config(sim_root, csi1):
    load_bold5000(sim_root / BOLD_DIR, "CSI1", roi_patch=csi1.roi_patch)
    with pytest.raises(ConfigError, match=r"fMRI_TransAE_BOLD\.yaml.*CSI1.*\[495, 342"):
        load_bold5000(sim_root / BOLD_DIR, "CSI1", roi_patch=[495, 342, 288, 331, 229],
                      config_file="fMRI_TransAE_BOLD.yaml")
    with pytest.raises(ConfigError, match="stats_from"):
        load_bold5000(sim_root / BOLD_DIR, "CSI1", stats_from="test")


# ----------------------------------------------------------------- restricted unpickler
class _RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _write_object_npy(path: Path, payload: bytes) -> None:
    with open(path, "wb") as f:
        npy_format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(payload)


def test_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "img_dict.npy"
    np.save(path, np.array({"a.jpg": _RunsCommand(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"img_dict\.npy.*'(posix|nt)\.system' is not admitted"):
        load_pickled_npy(path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        restricted_loads(pickle.dumps(eval))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_unpickler_reads_numpy_pickles(tmp_path, protocol):
    images = {"a.jpg": np.arange(12, dtype=np.uint8).reshape(2, 2, 3), "b.jpg": np.ones((2, 2, 3), np.uint8)}
    path = tmp_path / "img_dict.npy"
    _write_object_npy(path, pickle.dumps(np.array(images, dtype=object), protocol=protocol))
    loaded = load_pickled_npy(path)
    assert loaded.keys() == images.keys()
    for key in images:
        np.testing.assert_array_equal(loaded[key], images[key])
    assert restricted_loads(pickle.dumps(np.str_("x"), protocol=protocol)) == "x"


def test_unpickler_on_plain_and_broken_files(tmp_path):
    np.save(tmp_path / "plain.npy", np.arange(4))
    np.testing.assert_array_equal(load_pickled_npy(tmp_path / "plain.npy"), np.arange(4))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="junk.npy"):
        load_pickled_npy(tmp_path / "junk.npy")
    with pytest.raises(DataError, match="no such file"):
        load_pickled_npy(tmp_path / "none.npy")


# ---------------------------------------------------------------------------- bad input
def test_missing_subject_lists_found_ones(bold_copy):
    with pytest.raises(DataError, match=r"\['CSI1', 'CSI2'\].*no subject 'CSI4'"):
        load_bold5000(bold_copy, "CSI4")


def test_missing_files(bold_copy):
    (bold_copy / bold.REPEATED_FILE).unlink()
    with pytest.raises(DataError, match="repeated_stimuli_113_list.txt"):
        load_bold5000(bold_copy, "CSI1")
    (bold_copy / bold.IMG_DICT_FILE).unlink()
    with pytest.raises(DataError, match=r"img_dict\.npy.*no such file"):
        load_bold5000(bold_copy, "CSI1")


def test_presentation_list_must_match_trials(bold_copy):
    lists = bold_copy / bold.PRESENTATION_DIR / "CSI1"
    last = sorted(sorted(lists.iterdir())[-1].glob("*.txt"))[-1]
    last.unlink()
    with pytest.raises(DataError, match=r"CSI1: expected \d+ presented images.*found \d+ names"):
        load_bold5000(bold_copy, "CSI1")


def test_unknown_image_name(bold_copy):
    run = sorted((bold_copy / bold.PRESENTATION_DIR / "CSI1").glob("*/*.txt"))[0]
    lines = run.read_text().split()
    run.write_text("\n".join(["ghost.jpg"] + lines[1:]) + "\n")
    with pytest.raises(DataError, match=r"img_dict\.npy.*ghost\.jpg"):
        load_bold5000(bold_copy, "CSI1")


def test_bad_beta_files(bold_copy):
    path = _beta_path(bold_copy, "CSI1", "RH", "PPA")
    betas = np.load(path)
    bad = betas.copy()
    bad[2, 1] = np.nan
    np.save(path, bad)
    with pytest.raises(DataError, match=r"RHPPA\.npy.*NaN/Inf.*row 2, voxel 1"):
        load_bold5000(bold_copy, "CSI1")
    np.save(path, betas[:-1])
    with pytest.raises(DataError, match=r"RHPPA\.npy: expected shape \(\d+, \*\)"):
        load_bold5000(bold_copy, "CSI1")
    np.save(path, betas[:, 0])
    with pytest.raises(DataError, match=r"RHPPA\.npy: expected a 2-D array"):
        load_bold5000(bold_copy, "CSI1")
    np.save(path, betas.astype(np.int32))
    with pytest.raises(DataError, match=r"RHPPA\.npy.*int32"):
        load_bold5000(bold_copy, "CSI1")


def test_bad_image_dict(bold_copy):
    path = bold_copy / bold.IMG_DICT_FILE
    images = load_pickled_npy(path)
    name = next(iter(images))
    changed = {**images, name: images[name].astype(np.float32)}
    np.save(path, np.array(changed, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"img_dict\.npy entry .*uint8.*float32"):
        load_bold5000(bold_copy, "CSI1")
    np.save(path, np.array([1, 2, 3], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"img_dict\.npy: expected a dict"):
        load_bold5000(bold_copy, "CSI1")
    buffer = io.BytesIO()
    np.save(buffer, np.array({**images, name: images[name][:-1]}, dtype=object), allow_pickle=True)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="common image shape"):
        load_bold5000(bold_copy, "CSI1")
