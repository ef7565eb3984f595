"""The simulator writes the real GOD / BOLD5000 layouts, deterministically, with consistent ground truth."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from datasets import bold5000 as bold
from datasets import god
from datasets.safe_pickle import load_pickled_npy
from datasets.simulate import (BOLD_DIR, GOD_DIR, GROUND_TRUTH_DIR, SCALES, main, scaled_sizes,
                               BOLD_PAPER_SIZES, simulate)
from utils.errors import ConfigError

TINY = SCALES["tiny"]


def _arrays(root: Path) -> dict[str, np.ndarray]:
    """Every array and text file under `root`, keyed by relative path (and npz key)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                out.update({f"{rel}:{k}": npz[k] for k in npz.files})
        elif path.name == "img_dict.npy":
            out.update({f"{rel}:{k}": v for k, v in load_pickled_npy(path).items()})
        elif path.suffix == ".npy":
            out[rel] = np.load(path, allow_pickle=False)
        elif path.is_file():
            out[rel] = np.array(path.read_text())
    return out


def test_god_layout_keys_and_dtypes(sim_root):
    folder = sim_root / GOD_DIR
    for subject in TINY.god_subjects:
        with np.load(folder / f"{subject}.npz", allow_pickle=False) as npz:
            assert npz.files == list(god.GOD_MASK_ORDER) + ["arr_0", "arr_1", "arr_2", "arr_3"]
            masks = {k: npz[k] for k in god.GOD_MASK_ORDER}
            n_train = TINY.god_train_categories * TINY.god_images_per_category
            n_test = TINY.god_test_categories
            assert all(m.dtype == bool for m in masks.values())
            assert npz["arr_0"].shape[0] == n_train and npz["arr_0"].dtype == np.float32
            assert npz["arr_1"].shape[0] == n_test * TINY.god_test_repeats
            assert npz["arr_2"].shape[0] == n_test
            assert npz["arr_3"].dtype == np.int64 and sorted(npz["arr_3"]) == list(range(n_train))
            np.testing.assert_allclose(
                npz["arr_1"].reshape(n_test, TINY.god_test_repeats, -1).mean(1), npz["arr_2"], atol=1e-5)
        assert (masks["LVC"] == (masks["V1"] | masks["V2"] | masks["V3"])).all()
        assert (masks["VC"] == (masks["LVC"] | masks["V4"] | masks["HVC"])).all()
        higher = masks["LOC"] | masks["FFA"] | masks["PPA"]
        assert (masks["HVC"] & higher).sum() == higher.sum() and (masks["HVC"] & ~higher).any()
        assert (~masks["VC"]).any(), "some columns lie outside every ROI mask"
    with np.load(folder / god.IMAGES_FILE, allow_pickle=False) as npz:
        assert npz.files == ["train_images", "test_images"]
        assert npz["train_images"].dtype == np.uint8
        assert npz["train_images"].shape[1:] == (TINY.image_size, TINY.image_size, 3)
    row = (folder / god.TRAIN_LABEL_FILE).read_text().splitlines()[0].split(",")
    number, image = row[0].split(".")
    assert number.isdigit() and len(image) == 6 and row[1] == f"n{int(number):08d}_{int(image)}.JPEG"
    index = json.loads((folder / god.CLASS_INDEX_FILE).read_text())
    assert list(index) == [str(i) for i in range(len(index))]


def test_bold_layout(sim_root):
    root = sim_root / BOLD_DIR
    for subject in TINY.bold_subjects:
        rois = list(scaled_sizes(BOLD_PAPER_SIZES[subject], TINY.bold_voxel_factor))
        for roi in rois:
            for hemi in bold.HEMISPHERES:
                path = root / bold.BETAS_DIR / bold.BETAS_FILE.format(subject=subject, hemi=hemi, roi=roi)
                assert np.load(path).dtype == np.float32
        sessions = sorted((root / bold.PRESENTATION_DIR / subject).iterdir())
        assert sessions[0].name == f"{subject}_sess01"
        lines = (sessions[0] / f"{subject}_sess01_run01.txt").read_text().split()
        assert len(lines) == TINY.bold_trials_per_run
    images = load_pickled_npy(root / bold.IMG_DICT_FILE)
    repeated = (root / bold.REPEATED_FILE).read_text().split()
    assert len(repeated) == TINY.bold_test_images and set(repeated) <= set(images)
    assert len(images) == TINY.bold_train_images + TINY.bold_test_images
    assert any((root / bold.STIMULI_DIR / "Image_Labels").iterdir())


def _residual_ratio(measured: np.ndarray, clean: np.ndarray, noise_sd: np.ndarray) -> float:
    """Pooled variance of (measured - clean) / noise_sd: 1 when the stated noise level is right."""
    return float((((measured - clean) / noise_sd) ** 2).mean())


def test_ground_truth_matches_god_measurements(sim_root):
    for subject in TINY.god_subjects:
        gt = np.load(sim_root / GROUND_TRUTH_DIR / "GOD" / f"{subject}.npz")
        npz = np.load(sim_root / GOD_DIR / f"{subject}.npz")
        clean_train = gt["train_clean"][npz["arr_3"]]
        clean_repeats = np.repeat(gt["test_clean"], TINY.god_test_repeats, axis=0)
        measured = np.concatenate([npz["arr_0"], npz["arr_1"]])
        clean = np.concatenate([clean_train, clean_repeats])
        assert _residual_ratio(measured, clean, gt["noise_sd"]) == pytest.approx(1.0, abs=0.05)
        # The signal is there: per-voxel correlation of clean and measured is positive on average.
        roi = gt["loader_columns"]
        corr = [np.corrcoef(measured[:, c], clean[:, c])[0, 1] for c in roi]
        assert np.mean(corr) > 0.1


def test_ground_truth_matches_bold_measurements(sim_root):
    for subject in TINY.bold_subjects:
        gt = np.load(sim_root / GROUND_TRUTH_DIR / "BOLD5000" / f"{subject}.npz")
        files = sorted((sim_root / BOLD_DIR / bold.BETAS_DIR).glob(f"{subject}_*.npy"))
        betas = np.concatenate([np.load(f) for roi in bold.BOLD_ROIS for f in files
                                if f.name.endswith(f"{roi}.npy")], axis=1)
        clean = gt["image_clean"][gt["trial_image"]]
        assert betas.shape == clean.shape
        assert _residual_ratio(betas, clean, gt["noise_sd"]) == pytest.approx(1.0, abs=0.05)


def test_same_seed_same_data(sim_root, tmp_path):
    again = simulate(tmp_path / "again", scale="tiny", seed=0, progress=False)
    first, second = _arrays(sim_root), _arrays(again)
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_refuses_non_empty_target(tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "results.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="non-empty"):
        simulate(target, scale="tiny", progress=False)
    with pytest.raises(ConfigError, match="did not write"):
        simulate(target, scale="tiny", overwrite=True, progress=False)
    assert (target / "results.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="scale"):
        simulate(tmp_path / "new", scale="huge", progress=False)


def test_overwrite_replaces_a_simulated_tree_and_seed_changes_data(sim_root, tmp_path):
    target = Path(shutil.copytree(sim_root, tmp_path / "sim"))
    main(["--out", str(target), "--seed", "1", "--overwrite", "--scale", "tiny"])
    manifest = json.loads((target / GROUND_TRUTH_DIR / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["scale"] == "tiny"
    before = np.load(sim_root / GOD_DIR / "sbj_1.npz")["arr_0"]
    after = np.load(target / GOD_DIR / "sbj_1.npz")["arr_0"]
    assert before.shape[0] == after.shape[0] and not np.array_equal(before[:, :5], after[:, :5])
    assert [p.name for p in tmp_path.iterdir()] == ["sim"], "no temporary folders left behind"


@pytest.mark.slow
def test_demo_scale_is_learnable_but_not_trivial(tmp_path):
    """Ridge decoding of category attributes for unseen test categories: well above chance, not perfect."""
    from datasets.god import load_god
    from datasets.simulate import ATTRIBUTE_SIZES
    root = simulate(tmp_path / "demo", scale="demo", seed=0, progress=False)
    data = load_god(root / GOD_DIR, "sbj_1", include_repeats=False)
    gt = np.load(root / GROUND_TRUTH_DIR / "GOD" / "sbj_1.npz")
    table = json.loads((root / GROUND_TRUTH_DIR / "categories.json").read_text())
    blocks = ("shape", "palette", "orientation", "frequency", "layout")
    attrs = np.array([[c[b] for b in blocks] for c in table])
    train_cat = gt["train_category"][data.train_image_index]
    x, x_test = data.train_fmri.astype(np.float64), data.test_fmri.astype(np.float64)
    ridge = np.linalg.solve(x.T @ x + 500.0 * np.eye(x.shape[1]), x.T)   # [V, N_train]
    accuracy, chance = [], []
    for b, size in enumerate(ATTRIBUTE_SIZES):
        weights = ridge @ np.eye(size)[attrs[train_cat, b]]                # [V, size]
        predicted = np.argmax(x_test @ weights, axis=1)
        accuracy.append(float((predicted == attrs[gt["test_category"], b]).mean()))
        chance.append(1.0 / size)
    assert np.mean(accuracy) > np.mean(chance) + 0.3, accuracy
    assert np.mean(accuracy) < 0.99, accuracy
