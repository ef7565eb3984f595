"""What every dataset loader returns, shared input checks, and the torch Dataset.

A loader reads one subject of one dataset into a `SubjectData`: the voxel
vector (ROI groups concatenated in order), fMRI normalised with one scalar
mean/std taken from the training matrix, and the images each trial showed.
`FMRIImageDataset` turns a `SubjectData` split into (fMRI, image) pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from utils.errors import ConfigError, DataError, describe

RGB_CHANNELS = 3
UINT8_MAX = 255.0
NO_LABEL = -1
SPLITS = ("train", "test", "test_repeats")


@dataclass
class SubjectData:
    """One subject's fMRI, images and labels, ready for training and evaluation.

    V = number of kept voxels = sum(roi_patch). Image arrays are uint8 RGB.
    """

    dataset: str                           # 'GOD' | 'BOLD5000'
    subject: str                           # 'sbj_1' | 'CSI1'
    roi_names: list[str]                   # kept ROI groups, in voxel order
    roi_patch: list[int]                   # voxels per kept group, sum == V
    train_fmri: np.ndarray                 # float32 [N_train, V]
    train_image_index: np.ndarray          # int64 [N_train] -> row of train_images
    train_images: np.ndarray               # uint8 [N_train_img, H, W, 3]
    test_fmri: np.ndarray                  # float32 [N_test, V], repeats averaged
    test_images: np.ndarray                # uint8 [N_test, H, W, 3]; row i shows test image i
    train_labels: np.ndarray | None = None     # int64 [N_train_img], -1 = class not found
    test_labels: np.ndarray | None = None      # int64 [N_test]
    test_fmri_repeats: np.ndarray | None = None  # float32 [R, V], single test trials
    test_repeat_index: np.ndarray | None = None  # int64 [R] -> test image row
    norm_mean: float = 0.0
    norm_std: float = 1.0
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_voxels(self) -> int:
        return int(self.train_fmri.shape[1])


def check_roi_patch(config_value: Sequence[int] | None, data_value: Sequence[int], *,
                    config_file: str | Path | None, subject: str) -> None:
    """Raise ConfigError when a configured `roi_patch` differs from the data's.

    `config_value=None` means "take it from the data" and always passes.
    """
    if config_value is None:
        return
    configured = [int(v) for v in config_value]
    found = [int(v) for v in data_value]
    if configured != found:
        where = f"{config_file or '<config>'}: Data.roi_patch for {subject}"
        raise ConfigError(describe(where, f"the group sizes the data has, {found} "
                                          f"(sum {sum(found)})",
                                   f"{configured} (sum {sum(configured)})"))


def check_array(array: np.ndarray, where: str, *, ndim: int, kinds: str,
                shape: Sequence[int | None] | None = None) -> np.ndarray:
    """Check rank, dtype kind (numpy `dtype.kind` letters) and, optionally, shape.

    `shape` entries of None are not checked. Returns `array` unchanged.
    """
    if array.ndim != ndim or array.dtype.kind not in kinds:
        raise DataError(describe(where, f"a {ndim}-D array of dtype kind '{kinds}'",
                                 f"shape {tuple(array.shape)}, dtype {array.dtype}"))
    if shape is not None:
        for axis, size in enumerate(shape):
            if size is not None and array.shape[axis] != size:
                wanted = ", ".join("*" if s is None else str(s) for s in shape)
                wanted += "," if len(shape) == 1 else ""
                raise DataError(describe(where, f"shape ({wanted})", f"shape {tuple(array.shape)}"))
    return array


def check_finite(array: np.ndarray, where: str) -> None:
    """Raise DataError naming the first row/column if `array` holds NaN or Inf."""
    bad = ~np.isfinite(array)
    if bad.any():
        rows, cols = np.nonzero(bad.reshape(array.shape[0], -1))
        raise DataError(describe(where, "finite values", f"{int(bad.sum())} NaN/Inf entries "
                                 f"(first at row {rows[0]}, voxel {cols[0]})"))


def check_images(images: np.ndarray, where: str, count: int | None = None) -> np.ndarray:
    """uint8 [N, H, W, 3] with N == count (when given)."""
    check_array(images, where, ndim=4, kinds="u", shape=(count, None, None, RGB_CHANNELS))
    if images.dtype != np.uint8:
        raise DataError(describe(where, "dtype uint8", images.dtype))
    return images


def scalar_stats(train: np.ndarray, where: str) -> tuple[float, float]:
    """One mean and one standard deviation over the whole training matrix."""
    mean = float(np.mean(train, dtype=np.float64))
    std = float(np.std(train, dtype=np.float64))
    if not std > 0.0:
        raise DataError(describe(where, "training fMRI with non-zero spread", f"std {std}"))
    return mean, std


def normalise(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(x - mean) / std as float32."""
    return ((np.asarray(x, dtype=np.float64) - mean) / std).astype(np.float32)


class FMRIImageDataset(Dataset):
    """(fMRI, image) pairs of one split of a `SubjectData`.

    split: 'train' (one row per training trial), 'test' (repeat-averaged test
    rows) or 'test_repeats' (single test trials; needs `test_fmri_repeats`).
    Each item is a dict:
        fmri        float32 [1, V]
        image       float32 [3, S, S] in [0, 1], S = image_size (native size if None)
        image_index int: row of the split's image array
        label       int: class id, -1 when unknown
    hflip: flip the image left-right with probability 0.5 (training augmentation).
    """

    def __init__(self, data: SubjectData, split: str = "train", *, image_size: int | None = None,
                 hflip: bool = False):
        if split not in SPLITS:
            raise ConfigError(describe("FMRIImageDataset split", f"one of {SPLITS}", repr(split)))
        if split == "train":
            fmri, index = data.train_fmri, data.train_image_index
            images, labels = data.train_images, data.train_labels
        else:
            images, labels = data.test_images, data.test_labels
            if split == "test":
                fmri, index = data.test_fmri, np.arange(len(data.test_fmri))
            else:
                if data.test_fmri_repeats is None or data.test_repeat_index is None:
                    raise ConfigError(describe(f"{data.dataset} {data.subject} split 'test_repeats'",
                                               "single test trials in the data", "none loaded"))
                fmri, index = data.test_fmri_repeats, data.test_repeat_index
        self.fmri = torch.from_numpy(np.ascontiguousarray(fmri, dtype=np.float32))  # [N, V]
        self.image_index = np.asarray(index, dtype=np.int64)
        self.images = images
        self.labels = labels
        self.image_size = image_size
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.fmri)

    def _image(self, row: int) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(self.images[row])).permute(2, 0, 1)  # [3, H, W]
        image = image.float() / UINT8_MAX
        size = self.image_size
        if size is not None and tuple(image.shape[1:]) != (size, size):
            image = F.interpolate(image[None], size=(size, size), mode="bilinear",
                                  align_corners=False, antialias=True)[0].clamp(0.0, 1.0)
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.image_index[i])
        label = NO_LABEL if self.labels is None else int(self.labels[row])
        return {"fmri": self.fmri[i][None],  # [1, V]
                "image": self._image(row),    # [3, S, S]
                "image_index": row,
                "label": label}
