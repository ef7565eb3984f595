"""GOD loader: round trip from the simulated tree, and one clear error per kind of bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import load_subject
from datasets.common import FMRIImageDataset, check_roi_patch
from datasets.god import CLASS_INDEX_FILE, GOD_MASK_ORDER, IMAGES_FILE, TRAIN_LABEL_FILE, load_god
from datasets.simulate import GOD_DIR, GOD_GROUPS, GROUND_TRUTH_DIR, SCALES
from utils.errors import ConfigError, DataError

TINY = SCALES["tiny"]


@pytest.fixture(scope="module")
def sbj1(sim_root):
    return load_god(sim_root / GOD_DIR, "sbj_1")


def _rewrite(path: Path, **changes) -> None:
    """Rewrite an npz keeping its key order; a change of None deletes the key."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_shapes_groups_and_split_sizes(sbj1, sim_root):
    gt = np.load(sim_root / GROUND_TRUTH_DIR / "GOD" / "sbj_1.npz")
    n_train = TINY.god_train_categories * TINY.god_images_per_category
    assert sbj1.roi_names == list(GOD_GROUPS) and len(sbj1.roi_patch) == 8
    expected_patch = np.bincount(gt["column_roi"][gt["column_roi"] >= 0]).tolist()
    assert sbj1.roi_patch == expected_patch and sum(sbj1.roi_patch) == sbj1.num_voxels
    assert sbj1.train_fmri.shape == (n_train, sbj1.num_voxels) and sbj1.train_fmri.dtype == np.float32
    assert sbj1.test_fmri.shape == (TINY.god_test_categories, sbj1.num_voxels)
    assert sbj1.test_fmri_repeats.shape == (TINY.god_test_categories * TINY.god_test_repeats, sbj1.num_voxels)
    assert sbj1.train_images.shape == (n_train, TINY.image_size, TINY.image_size, 3)
    assert sbj1.test_images.shape[0] == TINY.god_test_categories
    assert np.bincount(sbj1.test_repeat_index).tolist() == [TINY.god_test_repeats] * TINY.god_test_categories


def test_normalisation_uses_train_statistics(sbj1, sim_root):
    assert abs(float(sbj1.train_fmri.mean())) < 1e-4
    assert float(sbj1.train_fmri.std()) == pytest.approx(1.0, abs=1e-4)
    raw = _load(sim_root / GOD_DIR / "sbj_1.npz")
    columns = np.load(sim_root / GROUND_TRUTH_DIR / "GOD" / "sbj_1.npz")["loader_columns"]
    expected_test = (raw["arr_2"][:, columns].astype(np.float64) - sbj1.norm_mean) / sbj1.norm_std
    np.testing.assert_allclose(sbj1.test_fmri, expected_test, atol=1e-5)
    expected_train = (raw["arr_0"][:, columns].astype(np.float64) - sbj1.norm_mean) / sbj1.norm_std
    np.testing.assert_allclose(sbj1.train_fmri, expected_train, atol=1e-5)
    averaged = np.stack([sbj1.test_fmri_repeats[sbj1.test_repeat_index == i].mean(0)
                         for i in range(len(sbj1.test_fmri))])
    np.testing.assert_allclose(averaged, sbj1.test_fmri, atol=1e-4)


def test_labels_follow_the_rendered_categories(sbj1, sim_root):
    gt = np.load(sim_root / GROUND_TRUTH_DIR / "GOD" / "sbj_1.npz")
    table = json.loads((sim_root / GROUND_TRUTH_DIR / "categories.json").read_text())
    class_of = np.array([c["class_id"] for c in table])
    np.testing.assert_array_equal(sbj1.train_labels, class_of[gt["train_category"]])
    np.testing.assert_array_equal(sbj1.test_labels, class_of[gt["test_category"]])
    raw = _load(sim_root / GOD_DIR / "sbj_1.npz")
    np.testing.assert_array_equal(sbj1.train_image_index, raw["arr_3"])
    # trial -> image -> category: the image a trial shows was rendered from that trial's category
    trial_labels = sbj1.train_labels[sbj1.train_image_index]
    assert len(set(trial_labels.tolist())) == TINY.god_train_categories
    assert not set(sbj1.train_labels.tolist()) & set(sbj1.test_labels.tolist())


def test_torch_dataset(sbj1):
    ds = FMRIImageDataset(sbj1, "train", image_size=32)
    item = ds[3]
    assert item["fmri"].shape == (1, sbj1.num_voxels) and item["fmri"].dtype == torch.float32
    assert item["image"].shape == (3, 32, 32) and 0.0 <= item["image"].min() <= item["image"].max() <= 1.0
    assert item["image_index"] == sbj1.train_image_index[3]
    assert item["label"] == sbj1.train_labels[sbj1.train_image_index[3]]
    test = FMRIImageDataset(sbj1, "test")
    assert len(test) == len(sbj1.test_fmri) and test[0]["image"].shape[1:] == sbj1.test_images.shape[1:3]
    assert len(FMRIImageDataset(sbj1, "test_repeats")) == len(sbj1.test_fmri_repeats)
    flip = FMRIImageDataset(sbj1, "test", hflip=True)
    torch.manual_seed(0)
    plain = test[0]["image"]
    seen = {bool(torch.equal(flip[0]["image"], plain.flip(-1))) for _ in range(20)}
    assert seen == {True, False}
    with pytest.raises(ConfigError, match="split"):
        FMRIImageDataset(sbj1, "val")
    no_repeats = load_god(Path(sbj1.source["fmri"]).parent, "sbj_1", include_repeats=False)
    with pytest.raises(ConfigError, match="test_repeats"):
        FMRIImageDataset(no_repeats, "test_repeats")


def test_dispatch_and_roi_patch_check(sim_root, sbj1):
    data = load_subject("GOD", sim_root / GOD_DIR, "sbj_1", roi_patch=sbj1.roi_patch, include_repeats=False)
    assert data.test_fmri_repeats is None and data.roi_patch == sbj1.roi_patch
    with pytest.raises(ConfigError, match="dataset"):
        load_subject("NSD", sim_root, "subj01")
    wrong = [1004, 801, 476, 588, 431, 249, 157, 760]
    with pytest.raises(ConfigError, match=r"cfg\.yaml.*sbj_1.*\[1004"):
        load_god(sim_root / GOD_DIR, "sbj_1", roi_patch=wrong, config_file="cfg.yaml")
    check_roi_patch(None, [1, 2], config_file="c.yaml", subject="s")


# ---------------------------------------------------------------------------- bad input
def test_missing_subject_lists_found_ones(god_copy):
    with pytest.raises(DataError, match=r"sbj_9\.npz.*\['sbj_1', 'sbj_2'\].*no subject 'sbj_9'"):
        load_god(god_copy, "sbj_9")
    with pytest.raises(DataError, match="no such folder"):
        load_god(god_copy / "nowhere", "sbj_1")


@pytest.mark.parametrize("missing", [IMAGES_FILE, CLASS_INDEX_FILE, TRAIN_LABEL_FILE])
def test_missing_file(god_copy, missing):
    (god_copy / missing).unlink()
    with pytest.raises(DataError, match=missing.replace(".", r"\.")):
        load_god(god_copy, "sbj_1")


def test_missing_key(god_copy):
    _rewrite(god_copy / "sbj_1.npz", arr_2=None)
    with pytest.raises(DataError, match=r"sbj_1\.npz key 'arr_2'.*missing"):
        load_god(god_copy, "sbj_1")
    _rewrite(god_copy / "sbj_1.npz", **{k: None for k in GOD_MASK_ORDER})
    with pytest.raises(DataError, match="ROI mask keys"):
        load_god(god_copy, "sbj_1")


def test_wrong_dtype_and_shape(god_copy):
    path = god_copy / "sbj_1.npz"
    arrays = _load(path)
    _rewrite(path, arr_3=arrays["arr_3"].astype(np.float32))
    with pytest.raises(DataError, match=r"key 'arr_3'.*float32"):
        load_god(god_copy, "sbj_1")
    _rewrite(path, arr_3=arrays["arr_3"], arr_0=arrays["arr_0"][0])
    with pytest.raises(DataError, match=r"key 'arr_0'.*2-D"):
        load_god(god_copy, "sbj_1")
    _rewrite(path, arr_0=arrays["arr_0"], V1=arrays["V1"].astype(np.float64) * 0.5)
    with pytest.raises(DataError, match=r"key 'V1'"):
        load_god(god_copy, "sbj_1")


def test_non_finite_voxels(god_copy):
    path = god_copy / "sbj_1.npz"
    arrays = _load(path)
    train = arrays["arr_0"].copy()
    train[4, np.flatnonzero(arrays["V1"])[0]] = np.nan
    _rewrite(path, arr_0=train)
    with pytest.raises(DataError, match=r"arr_0.*NaN/Inf.*row 4"):
        load_god(god_copy, "sbj_1")
    test = arrays["arr_2"].copy()
    test[0, np.flatnonzero(arrays["PPA"])[0]] = np.inf
    _rewrite(path, arr_0=arrays["arr_0"], arr_2=test)
    with pytest.raises(DataError, match=r"arr_2.*NaN/Inf"):
        load_god(god_copy, "sbj_1")


def test_bad_values_outside_every_mask_are_ignored(god_copy):
    arrays = _load(god_copy / "sbj_1.npz")
    outside = np.flatnonzero(~arrays["VC"])[0]
    train = arrays["arr_0"].copy()
    train[:, outside] = np.nan
    _rewrite(god_copy / "sbj_1.npz", arr_0=train)
    assert np.isfinite(load_god(god_copy, "sbj_1").train_fmri).all()


def test_train_test_voxel_counts_differ(god_copy):
    arrays = _load(god_copy / "sbj_1.npz")
    _rewrite(god_copy / "sbj_1.npz", arr_2=arrays["arr_2"][:, :-3])
    columns = arrays["arr_0"].shape[1]
    with pytest.raises(DataError, match=rf"arr_2.*expected shape \(\*, {columns}\).*{columns - 3}"):
        load_god(god_copy, "sbj_1")


def test_masks_that_select_nothing(god_copy):
    path = god_copy / "sbj_1.npz"
    arrays = _load(path)
    empty = {k: np.zeros_like(arrays[k]) for k in GOD_MASK_ORDER}
    _rewrite(path, **empty)
    with pytest.raises(DataError, match="every mask empty"):
        load_god(god_copy, "sbj_1")
    _rewrite(path, **{k: arrays[k] for k in GOD_MASK_ORDER})
    _rewrite(path, V2=arrays["V2"][:-1])
    with pytest.raises(DataError, match=r"key 'V2'.*shape"):
        load_god(god_copy, "sbj_1")


def test_image_counts_must_match(god_copy):
    images = _load(god_copy / IMAGES_FILE)
    _rewrite(god_copy / IMAGES_FILE, test_images=images["test_images"][:-1])
    with pytest.raises(DataError, match=r"test_images.*expected shape \(10,"):
        load_god(god_copy, "sbj_1")
    _rewrite(god_copy / IMAGES_FILE, test_images=images["test_images"],
             train_images=images["train_images"][:-5])
    with pytest.raises(DataError, match=r"arr_3.*indices in \[0, 55\)"):
        load_god(god_copy, "sbj_1")
    _rewrite(god_copy / IMAGES_FILE, train_images=images["train_images"].astype(np.float32))
    with pytest.raises(DataError, match="train_images.*float32"):
        load_god(god_copy, "sbj_1")
    _rewrite(god_copy / IMAGES_FILE, train_images=images["train_images"])
    lines = (god_copy / TRAIN_LABEL_FILE).read_text().splitlines()
    (god_copy / TRAIN_LABEL_FILE).write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match=r"imagenet_training_label\.csv.*60 rows.*59 rows"):
        load_god(god_copy, "sbj_1")
    arrays = _load(god_copy / "sbj_1.npz")
    _rewrite(god_copy / "sbj_1.npz", arr_3=arrays["arr_3"][:-1])
    with pytest.raises(DataError, match=r"arr_3.*expected shape \(60,\)"):
        load_god(god_copy, "sbj_1")


def test_repeat_rows_must_group_by_test_image(god_copy):
    arrays = _load(god_copy / "sbj_1.npz")
    _rewrite(god_copy / "sbj_1.npz", arr_1=arrays["arr_1"][:-1])
    with pytest.raises(DataError, match=r"arr_1.*multiple of 10"):
        load_god(god_copy, "sbj_1")
    assert load_god(god_copy, "sbj_1", include_repeats=False).test_fmri_repeats is None


def test_unknown_wordnet_id_gives_label_minus_one(god_copy):
    lines = (god_copy / TRAIN_LABEL_FILE).read_text().splitlines()
    lines[0] = "1234.000001,n00001234_1.JPEG"
    (god_copy / TRAIN_LABEL_FILE).write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="1 of 60"):
        data = load_god(god_copy, "sbj_1")
    assert data.train_labels[0] == -1 and (data.train_labels[1:] >= 0).all()
    lines[0] = "not-an-id,x"
    (god_copy / TRAIN_LABEL_FILE).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="row 1"):
        load_god(god_copy, "sbj_1")
    (god_copy / CLASS_INDEX_FILE).write_text("[1, 2")
    with pytest.raises(DataError, match="imagenet_class_index"):
        load_god(god_copy, "sbj_1")
