"""Generic Object Decoding (Kamitani) as MinD-Vis packages it: `dataset/Kamitani/npz/`.

Files read (see datasets/README.md for the full layout):
    sbj_{1..5}.npz     ROI masks (bool [N]) first, in the file's key order, then
                       arr_0 train fMRI [N_train, N], arr_1 test repeats [R, N],
                       arr_2 repeat-averaged test fMRI [N_test, N], arr_3 int [N_train]
    images_256.npz     train_images [N_train_img, H, W, 3], test_images [N_test, H, W, 3], uint8
    imagenet_class_index.json, imagenet_training_label.csv, imagenet_testing_label.csv

Voxel vector: walk the masks in file order, keep each mask's voxels not taken by
an earlier mask, skip masks that add none, concatenate the kept groups.
"""
from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path

import numpy as np

from datasets.common import (NO_LABEL, SubjectData, check_array, check_finite, check_images,
                             check_roi_patch, normalise, scalar_stats)
from utils.errors import ConfigError, DataError, describe
from utils.io import NpzArchive, open_npz, require_file

DATASET = "GOD"
GOD_SUBJECTS = tuple(f"sbj_{i}" for i in range(1, 6))
GOD_MASK_ORDER = ("V1", "V2", "V3", "V4", "LOC", "FFA", "PPA", "LVC", "HVC", "VC")
IMAGES_FILE = "images_256.npz"
CLASS_INDEX_FILE = "imagenet_class_index.json"
TRAIN_LABEL_FILE = "imagenet_training_label.csv"
TEST_LABEL_FILE = "imagenet_testing_label.csv"
TRAIN_KEY, REPEATS_KEY, TEST_KEY, INDEX_KEY = "arr_0", "arr_1", "arr_2", "arr_3"
TRAIN_IMAGES_KEY, TEST_IMAGES_KEY = "train_images", "test_images"
POSITIONAL_KEY = re.compile(r"arr_\d+")
FLOAT_KINDS, INT_KINDS, MASK_KINDS = "f", "iu", "biu"
REPEAT_MEAN_TOLERANCE = 1e-3   # of arr_2's standard deviation: float rounding passes, a wrong grouping does not


def available_subjects(root: Path) -> list[str]:
    """Subjects whose `<subject>.npz` lies in `root` (excluding the images file)."""
    return sorted(p.stem for p in root.glob("*.npz") if p.name != IMAGES_FILE)


def _subject_file(root: Path, subject: str) -> Path:
    if not root.is_dir():
        raise DataError(describe(root, "a folder holding sbj_*.npz and images_256.npz", "no such folder"))
    path = root / f"{subject}.npz"
    if not path.is_file():
        raise DataError(describe(path, f"a subject file; subjects found in {root}: "
                                       f"{available_subjects(root) or 'none'}", f"no subject {subject!r}"))
    return path


def roi_groups(masks: dict[str, np.ndarray], path: Path, num_columns: int) -> list[tuple[str, np.ndarray]]:
    """Greedy ROI groups: (name, column indices) for each mask that adds new voxels.

    `masks` is ordered as in the file; each mask is a bool [num_columns] vector.
    """
    taken = np.zeros(num_columns, dtype=bool)
    groups = []
    for name, mask in masks.items():
        where = f"{path} key '{name}'"
        check_array(mask, where, ndim=1, kinds=MASK_KINDS, shape=(num_columns,))
        if mask.dtype != bool:
            if not np.isin(mask, (0, 1)).all():
                raise DataError(describe(where, "a boolean ROI mask (or 0/1 integers)",
                                         f"values {np.unique(mask)[:5].tolist()}"))
            mask = mask.astype(bool)
        new = mask & ~taken
        if new.any():
            groups.append((name, np.flatnonzero(new)))
            taken |= new
    if not groups:
        raise DataError(describe(f"{path} ROI masks {list(masks)}", "at least one selected voxel",
                                 "every mask empty"))
    return groups


def repeat_rows(repeats: np.ndarray, averaged: np.ndarray, path: Path) -> np.ndarray:
    """Test image row of each single trial: `arr_1` grouped by image in `arr_2`'s order (or repeat-major).

    repeats [R, V], averaged [N_test, V] (same columns). The mean of each image's
    trials must equal its `arr_2` row (to REPEAT_MEAN_TOLERANCE of `arr_2`'s spread);
    a file whose repeats follow neither order would be averaged wrongly, so it is refused.
    """
    num_test = len(averaged)
    per_image = len(repeats) // num_test
    tolerance = REPEAT_MEAN_TOLERANCE * max(float(np.std(averaged, dtype=np.float64)), np.finfo(np.float32).tiny)
    grouped = np.repeat(np.arange(num_test, dtype=np.int64), per_image)     # rows i*R .. i*R+R-1 -> image i
    repeat_major = np.tile(np.arange(num_test, dtype=np.int64), per_image)  # rows r*N + i -> image i
    worst = None
    for index in (grouped, repeat_major):
        means = np.zeros(averaged.shape, dtype=np.float64)                  # [N_test, V]
        np.add.at(means, index, repeats)
        means /= per_image
        error = np.abs(means - averaged).max(axis=1)                        # [N_test]
        if error.max(initial=0.0) <= tolerance:
            return index
        worst = worst if worst is not None else (int(error.argmax()), float(error.max()))
    raise DataError(describe(f"{path} keys '{REPEATS_KEY}' and '{TEST_KEY}'",
                             f"'{REPEATS_KEY}' rows grouped by test image in '{TEST_KEY}' order ({per_image} "
                             f"consecutive rows per image, whose mean is that image's '{TEST_KEY}' row)",
                             f"row {worst[0]} of '{TEST_KEY}' differs from the mean of its "
                             f"'{REPEATS_KEY}' rows by up to {worst[1]:.4g} (tolerance {tolerance:.3g}); "
                             "reorder the repeats so they group by test image"))


def _read_masks(npz: NpzArchive, path: Path) -> dict[str, np.ndarray]:
    names = [k for k in npz.files if not POSITIONAL_KEY.fullmatch(k)]
    if not names:
        raise DataError(describe(path, f"ROI mask keys (e.g. {list(GOD_MASK_ORDER)}) before arr_0..arr_3",
                                 f"keys {npz.files}"))
    return {name: npz[name] for name in names}


def _class_lookup(path: Path) -> dict[int, int]:
    """WordNet number (e.g. 1518878 for 'n01518878') -> class index, from the class-index JSON."""
    try:
        index = json.loads(require_file(path, "ImageNet class index").read_text())
        lookup = {}
        for key, value in index.items():
            for wnid in value[:-1]:
                lookup[int(str(wnid).lstrip("n"))] = int(key)
    except (json.JSONDecodeError, ValueError, TypeError, AttributeError) as err:
        raise DataError(describe(path, '{"<class>": ["n<digits>", ..., "<name>"], ...}',
                                 f"unreadable content ({err})")) from None
    return lookup


def read_labels(path: Path, lookup: dict[int, int], count: int) -> np.ndarray:
    """Class index per image row; -1 (with a warning) when a WordNet id is not in the index."""
    with open(require_file(path, "one row per image, first column '<wordnet>.<image>'"), newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if len(rows) != count:
        raise DataError(describe(path, f"{count} rows (one per image in {IMAGES_FILE})", f"{len(rows)} rows"))
    labels = np.empty(count, dtype=np.int64)
    for i, row in enumerate(rows):
        head = row[0].strip().split(".")[0]
        if not head.isdigit():
            raise DataError(describe(f"{path} row {i + 1}", "a stimulus id like '1518878.008432'",
                                     repr(row[0])))
        labels[i] = lookup.get(int(head), NO_LABEL)
    unknown = int((labels == NO_LABEL).sum())
    if unknown:
        warnings.warn(f"{path}: {unknown} of {count} images have a WordNet id missing from "
                      f"{CLASS_INDEX_FILE}; their label is {NO_LABEL}")
    return labels


def _load_images(root: Path, num_test: int) -> tuple[np.ndarray, np.ndarray]:
    path = root / IMAGES_FILE
    with open_npz(path, f"'{TRAIN_IMAGES_KEY}' and '{TEST_IMAGES_KEY}' uint8 arrays") as npz:
        train = check_images(npz[TRAIN_IMAGES_KEY], f"{path} key '{TRAIN_IMAGES_KEY}'")
        test = check_images(npz[TEST_IMAGES_KEY], f"{path} key '{TEST_IMAGES_KEY}'", num_test)
    return train, test


TEST_NORMALISATIONS = ("train", "release")


def statistics_for_test(train_normalised: np.ndarray, mean: float, std: float, mode: str) -> tuple[float, float]:
    """Mean and std that normalise the test fMRI.

    'train': the raw training statistics (train and test in the same units).
    'release': the release's quirk (spec §8) — the statistics of the *already
    normalised* training matrix (about 0 and 1), which leaves the test fMRI
    nearly in its raw units.
    """
    if mode not in TEST_NORMALISATIONS:
        raise ConfigError(describe("Data.test_normalisation", f"one of {TEST_NORMALISATIONS}", repr(mode)))
    if mode == "train":
        return mean, std
    return scalar_stats(train_normalised, "normalised training fMRI (release test normalisation)")


def load_god(root: str | Path, subject: str, *, roi_patch=None, config_file=None,
             include_repeats: bool = True, test_normalisation: str = "train") -> SubjectData:
    """Load one GOD subject from `root` (the folder holding sbj_*.npz, e.g. dataset/Kamitani/npz).

    roi_patch: the configured group sizes; ConfigError if they differ from the data's.
    include_repeats: also load the single test trials (`arr_1`).
    test_normalisation: 'train' or 'release' (`statistics_for_test`); the single trials
    are normalised like the averaged test rows.
    """
    root = Path(root)
    path = _subject_file(root, subject)
    with open_npz(path, f"GOD subject file: ROI masks, {TRAIN_KEY}..{INDEX_KEY}") as npz:
        masks = _read_masks(npz, path)
        train_raw = check_array(npz[TRAIN_KEY], f"{path} key '{TRAIN_KEY}'", ndim=2,
                                kinds=FLOAT_KINDS)
        num_train, num_columns = train_raw.shape
        test_raw = check_array(npz[TEST_KEY], f"{path} key '{TEST_KEY}'", ndim=2,
                               kinds=FLOAT_KINDS, shape=(None, num_columns))
        index = check_array(npz[INDEX_KEY], f"{path} key '{INDEX_KEY}'", ndim=1,
                            kinds=INT_KINDS, shape=(num_train,)).astype(np.int64)
        repeats_raw = None
        if include_repeats:
            repeats_raw = check_array(npz[REPEATS_KEY], f"{path} key '{REPEATS_KEY}'",
                                      ndim=2, kinds=FLOAT_KINDS, shape=(None, num_columns))
    num_test = test_raw.shape[0]
    groups = roi_groups(masks, path, num_columns)
    columns = np.concatenate([cols for _, cols in groups])
    names = [name for name, _ in groups]
    patch = [len(cols) for _, cols in groups]
    check_roi_patch(roi_patch, patch, config_file=config_file, subject=subject)

    train = train_raw[:, columns]  # [N_train, V]
    check_finite(train, f"{path} key '{TRAIN_KEY}' (ROI voxels)")
    test = test_raw[:, columns]    # [N_test, V]
    check_finite(test, f"{path} key '{TEST_KEY}' (ROI voxels)")
    mean, std = scalar_stats(train, f"{path} key '{TRAIN_KEY}'")
    train_normalised = normalise(train, mean, std)
    test_mean, test_std = statistics_for_test(train_normalised, mean, std, test_normalisation)

    repeats = repeat_index = None
    if repeats_raw is not None:
        if num_test == 0 or repeats_raw.shape[0] % num_test:
            raise DataError(describe(f"{path} key '{REPEATS_KEY}'", f"a multiple of {num_test} rows "
                                     f"(repeats of each '{TEST_KEY}' row, grouped by image)",
                                     f"{repeats_raw.shape[0]} rows"))
        repeats = repeats_raw[:, columns]  # [R, V]
        check_finite(repeats, f"{path} key '{REPEATS_KEY}' (ROI voxels)")
        repeat_index = repeat_rows(repeats, test, path)
        repeats = normalise(repeats, test_mean, test_std)

    train_images, test_images = _load_images(root, num_test)
    if index.min(initial=0) < 0 or index.max(initial=0) >= len(train_images):
        raise DataError(describe(f"{path} key '{INDEX_KEY}'", f"indices in [0, {len(train_images)}) "
                                 f"(rows of {IMAGES_FILE} '{TRAIN_IMAGES_KEY}')",
                                 f"range [{index.min()}, {index.max()}]"))
    lookup = _class_lookup(root / CLASS_INDEX_FILE)
    train_labels = read_labels(root / TRAIN_LABEL_FILE, lookup, len(train_images))
    test_labels = read_labels(root / TEST_LABEL_FILE, lookup, len(test_images))

    return SubjectData(
        dataset=DATASET, subject=subject, roi_names=names, roi_patch=patch,
        train_fmri=train_normalised, train_image_index=index, train_images=train_images,
        test_fmri=normalise(test, test_mean, test_std), test_images=test_images,
        train_labels=train_labels, test_labels=test_labels,
        test_fmri_repeats=repeats, test_repeat_index=repeat_index,
        norm_mean=mean, norm_std=std,
        source={"fmri": str(path), "images": str(root / IMAGES_FILE),
                "class_index": str(root / CLASS_INDEX_FILE),
                "train_labels": str(root / TRAIN_LABEL_FILE), "test_labels": str(root / TEST_LABEL_FILE),
                "test_normalisation": test_normalisation, "test_mean": test_mean, "test_std": test_std})
