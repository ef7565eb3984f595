"""Any folder of images as decoder training data (e.g. an ImageNet subset): the MaskGIT decoder
needs images only, no fMRI.

Every `.jpg`, `.jpeg`, `.png` file under the folder (recursively, sorted by path) is read as RGB,
centre-cropped to a square and resized (bicubic) to `size`. All images are held in memory as uint8:
N x size x size x 3 bytes (100k images at 256 px: 19.7 GB), so pick a subset that fits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from utils.errors import DataError, describe

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(folder: str | Path) -> list[Path]:
    """The image files under `folder`, sorted; DataError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(describe(f"{folder} (Data.image_folder)", "a folder of images", "no such folder"))
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(describe(f"{folder} (Data.image_folder)", f"image files ({', '.join(IMAGE_SUFFIXES)})",
                                 "none"))
    return files


def square(image: Image.Image, size: int) -> np.ndarray:
    """RGB image -> uint8 [size, size, 3]: the centred square crop, resized."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    crop = image.convert("RGB").crop((left, top, left + side, top + side))
    return np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC))


def load_image(path: Path, size: int) -> np.ndarray:
    """uint8 [size, size, 3] of one image file (`square`); DataError when it cannot be read."""
    try:
        with Image.open(path) as image:
            return square(image, size)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(describe(path, "a readable image", f"{type(err).__name__}: {err}")) from err


def load_image_folder(folder: str | Path, size: int, progress: bool = True) -> np.ndarray:
    """uint8 [N, size, size, 3] of every image under `folder` (sorted by path)."""
    return np.stack([load_image(path, size)
                     for path in tqdm(image_files(folder), desc="reading images", disable=not progress)])
