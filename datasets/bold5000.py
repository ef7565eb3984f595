"""BOLD5000 as MinD-Vis packages it: `dataset/BOLD5000/`.

Files read (see datasets/README.md for the full layout):
    BOLD5000_GLMsingle_ROI_betas/py/CSI{n}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{LH,RH}{ROI}.npy
        float [n_trials, voxels] per hemisphere and ROI
    BOLD5000_Stimuli/Scene_Stimuli/Presented_Stimuli/img_dict.npy
        pickled dict image name -> uint8 [H, W, 3] (read with a restricted unpickler)
    BOLD5000_Stimuli/Stimuli_Presentation_Lists/CSI{n}/<session>/*.txt
        image names in presentation order (sorted folders, sorted files; 'rep_' prefix stripped)
    BOLD5000_Stimuli/Scene_Stimuli/repeated_stimuli_113_list.txt
        the repeated images: the test set

Voxel vector: for each ROI in BOLD_ROIS order, the subject's files ending in that
ROI name, in sorted file-name order (LH before RH); ROIs without files are skipped.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from datasets.common import (SubjectData, check_array, check_finite, check_roi_patch, normalise,
                             scalar_stats)
from datasets.safe_pickle import load_pickled_npy
from utils.errors import ConfigError, DataError, describe
from utils.io import load_npy, require_file

DATASET = "BOLD5000"
BOLD_SUBJECTS = ("CSI1", "CSI2", "CSI3", "CSI4")
BOLD_ROIS = ("EarlyVis", "LOC", "OPA", "PPA", "RSC")
BETAS_DIR = Path("BOLD5000_GLMsingle_ROI_betas") / "py"
BETAS_FILE = "{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{hemi}{roi}.npy"
HEMISPHERES = ("LH", "RH")
STIMULI_DIR = Path("BOLD5000_Stimuli")
IMG_DICT_FILE = STIMULI_DIR / "Scene_Stimuli" / "Presented_Stimuli" / "img_dict.npy"
REPEATED_FILE = STIMULI_DIR / "Scene_Stimuli" / "repeated_stimuli_113_list.txt"
PRESENTATION_DIR = STIMULI_DIR / "Stimuli_Presentation_Lists"
REPEAT_PREFIX = "rep_"
SUBJECT_PATTERN = re.compile(r"^(CSI\d+)_.*\.npy$")
STATS_CHOICES = ("train", "all")
MAX_NAMES_SHOWN = 5


def available_subjects(root: Path) -> list[str]:
    """Subjects that have at least one beta file under `root`."""
    folder = root / BETAS_DIR
    found = {m.group(1) for p in folder.glob("*.npy") if (m := SUBJECT_PATTERN.match(p.name))}
    return sorted(found)


def _beta_files(root: Path, subject: str) -> list[tuple[str, list[Path]]]:
    """(ROI, sorted files) for each ROI of BOLD_ROIS that the subject has files for."""
    folder = root / BETAS_DIR
    if not folder.is_dir():
        raise DataError(describe(folder, "the GLMsingle ROI beta folder", "no such folder"))
    files = sorted(p for p in folder.glob(f"{subject}_*.npy"))
    if not files:
        raise DataError(describe(folder, f"beta files '{subject}_*.npy'; subjects found: "
                                         f"{available_subjects(root) or 'none'}", f"no subject {subject!r}"))
    groups = [(roi, [p for p in files if p.name.endswith(f"{roi}.npy")]) for roi in BOLD_ROIS]
    groups = [(roi, paths) for roi, paths in groups if paths]
    for roi, paths in groups:
        wanted = [folder / BETAS_FILE.format(subject=subject, hemi=hemi, roi=roi) for hemi in HEMISPHERES]
        absent = [p for p in wanted if p not in paths]
        if absent:
            raise DataError(describe(absent[0], f"the {roi} betas of both hemispheres ({', '.join(HEMISPHERES)}) "
                                                f"of {subject}; a missing hemisphere would quietly shrink the ROI",
                                     f"no such file (found {[p.name for p in paths]})"))
    if not groups:
        raise DataError(describe(folder, f"files of {subject} ending in one of {BOLD_ROIS}",
                                 [p.name for p in files[:MAX_NAMES_SHOWN]]))
    return groups


def _load_betas(groups: list[tuple[str, list[Path]]]) -> tuple[np.ndarray, list[int]]:
    """Concatenate the ROI files' columns: [n_trials, V] float32 and voxels per ROI."""
    blocks, patch, num_trials, first = [], [], None, None
    for roi, paths in groups:
        size = 0
        for path in paths:
            betas = check_array(load_npy(path, f"betas [trials, voxels] of {roi}", mmap=True), str(path),
                                ndim=2, kinds="f", shape=(num_trials, None))
            if num_trials is None:
                num_trials, first = betas.shape[0], path
            if betas.shape[1] == 0:
                raise DataError(describe(path, "at least one voxel column", "shape " + str(betas.shape)))
            betas = np.asarray(betas, dtype=np.float32)
            check_finite(betas, str(path))
            blocks.append(betas)
            size += betas.shape[1]
        patch.append(size)
    return np.concatenate(blocks, axis=1), patch  # [n_trials, V]


def presentation_list(root: Path, subject: str) -> tuple[list[str], Path]:
    """Image names in presentation order: sorted session folders, sorted .txt files, 'rep_' stripped."""
    folder = root / PRESENTATION_DIR / subject
    if not folder.is_dir():
        raise DataError(describe(folder, f"the presentation lists of {subject}", "no such folder"))
    names = []
    for session in sorted(p for p in folder.iterdir() if p.is_dir()):
        for run in sorted(session.glob("*.txt")):
            for line in run.read_text().split():
                names.append(line[len(REPEAT_PREFIX):] if line.startswith(REPEAT_PREFIX) else line)
    if not names:
        raise DataError(describe(folder, "<session>/*.txt files naming the presented images", "none"))
    return names, folder


def load_image_dict(path: Path) -> dict[str, np.ndarray]:
    """img_dict.npy -> {name: uint8 [H, W, 3]}, through the restricted unpickler."""
    images = load_pickled_npy(require_file(path, "pickled dict image name -> uint8 [H, W, 3]"))
    if not isinstance(images, dict):
        raise DataError(describe(path, "a dict image name -> uint8 [H, W, 3]", type(images).__name__))
    checked = {}
    for name, image in images.items():
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                or image.shape[2] != 3:
            found = (f"dtype {image.dtype}, shape {image.shape}" if isinstance(image, np.ndarray)
                     else type(image).__name__)
            raise DataError(describe(f"{path} entry {name!r}", "uint8 [H, W, 3]", found))
        checked[str(name)] = image
    return checked


def _stack_images(images: dict[str, np.ndarray], names: list[str], path: Path) -> np.ndarray:
    """uint8 [len(names), H, W, 3]; every image must have the first one's shape."""
    shape = images[names[0]].shape
    for name in names:
        if images[name].shape != shape:
            raise DataError(describe(f"{path} entry {name!r}", f"the common image shape {shape}",
                                     images[name].shape))
    return np.stack([images[name] for name in names])


def load_bold5000(root: str | Path, subject: str, *, roi_patch=None, config_file=None,
                  include_repeats: bool = True, stats_from: str = "train") -> SubjectData:
    """Load one BOLD5000 subject from `root` (e.g. dataset/BOLD5000).

    Test set: for each image of the repeated list the subject saw, the mean of its
    trials, in the list's order. Train: every other trial.
    stats_from: 'train' (default) takes the normalisation mean/std from the train
    trials; 'all' from every trial, as the MinD-Vis packaging did.
    """
    if stats_from not in STATS_CHOICES:
        raise ConfigError(describe("load_bold5000 stats_from", f"one of {STATS_CHOICES}", repr(stats_from)))
    root = Path(root)
    groups = _beta_files(root, subject)
    betas, patch = _load_betas(groups)  # [n_trials, V]
    names = [roi for roi, _ in groups]
    check_roi_patch(roi_patch, patch, config_file=config_file, subject=subject)
    first_file = groups[0][1][0]

    shown, list_folder = presentation_list(root, subject)
    if len(shown) != len(betas):
        raise DataError(describe(list_folder, f"{len(betas)} presented images (rows of {first_file.name})",
                                 f"{len(shown)} names in the presentation lists"))
    img_path = root / IMG_DICT_FILE
    images = load_image_dict(img_path)
    missing = sorted({n for n in shown if n not in images})
    if missing:
        raise DataError(describe(img_path, f"an image for every name in {list_folder}",
                                 f"{len(missing)} missing, e.g. {missing[:MAX_NAMES_SHOWN]}"))
    repeated_path = require_file(root / REPEATED_FILE, "names of the repeated test images")
    repeated = repeated_path.read_text().split()

    trials_of: dict[str, list[int]] = {}
    for trial, name in enumerate(shown):
        trials_of.setdefault(name, []).append(trial)
    test_names = [n for n in dict.fromkeys(repeated) if n in trials_of]
    if not test_names:
        raise DataError(describe(repeated_path, f"at least one image {subject} saw", "none of them"))
    test_trials = [trials_of[n] for n in test_names]
    test_set = set(test_names)
    train_trials = np.array([t for t, n in enumerate(shown) if n not in test_set], dtype=np.int64)
    if len(train_trials) == 0:
        raise DataError(describe(list_folder, "some trials outside the repeated list", "none"))
    train_names = list(dict.fromkeys(shown[t] for t in train_trials))
    row_of = {n: i for i, n in enumerate(train_names)}

    stats_rows = betas[train_trials] if stats_from == "train" else betas
    mean, std = scalar_stats(stats_rows, str(first_file))
    test_fmri = np.stack([betas[t].mean(axis=0) for t in test_trials])  # [N_test, V]
    repeats = repeat_index = None
    if include_repeats:
        repeats = normalise(betas[np.concatenate(test_trials)], mean, std)  # [R, V]
        repeat_index = np.concatenate([np.full(len(t), i, dtype=np.int64) for i, t in enumerate(test_trials)])

    return SubjectData(
        dataset=DATASET, subject=subject, roi_names=names, roi_patch=patch,
        train_fmri=normalise(betas[train_trials], mean, std),
        train_image_index=np.array([row_of[shown[t]] for t in train_trials], dtype=np.int64),
        train_images=_stack_images(images, train_names, img_path),
        test_fmri=normalise(test_fmri, mean, std),
        test_images=_stack_images(images, test_names, img_path),
        train_labels=None, test_labels=None,
        test_fmri_repeats=repeats, test_repeat_index=repeat_index,
        norm_mean=mean, norm_std=std,
        source={"betas": [str(p) for _, paths in groups for p in paths], "images": str(img_path),
                "presentation_lists": str(list_folder), "repeated_list": str(repeated_path),
                "train_image_names": train_names, "test_image_names": test_names,
                "stats_from": stats_from})
