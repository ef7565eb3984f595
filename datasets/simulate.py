"""Simulated brain: writes GOD and BOLD5000 in their real on-disk layouts plus the ground truth.

    python -m datasets.simulate --out dataset/simulated [--scale tiny|demo|full] [--seed 0]
                                [--image-size N] [--overwrite]

Images are rendered procedurally: a category fixes a shape, a colour palette,
a stripe orientation and frequency and a layout; each image of a category
jitters position, size, rotation, stripe phase and colours. Voxels are grouped
under the real ROI names: early ROIs follow a population-receptive-field model
of local oriented energy and colour, higher ROIs weight the category attributes
(with some mixing of global image statistics). Every trial adds independent
Gaussian noise to the voxel's noise-free response. The model is described in
datasets/README.md; the noise-free responses and all weights are written to
<out>/ground_truth/.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from datasets import bold5000 as bold
from datasets import god
from utils.errors import ConfigError, describe
from utils.io import progress_wanted, staged_folder
from utils.guard import RunFolders, guarded

GENERATOR = "datasets.simulate"
GROUND_TRUTH_DIR = "ground_truth"
MANIFEST_FILE = "manifest.json"
WRITTEN_KEY = "files_written"   # manifest entry: every file the simulator wrote (what --overwrite may replace)
MAX_LISTED = 5
GOD_DIR = Path("Kamitani") / "npz"
BOLD_DIR = Path("BOLD5000")
FMRI_DTYPE = np.float32   # voxel responses; the loaders accept any float dtype

# --- image attributes: a category is one value of each --------------------------------
SHAPES = ("disc", "square", "triangle", "cross", "ring", "star")
PALETTES = {  # name -> (background, foreground, accent) RGB in [0, 1]
    "ember": ((0.25, 0.10, 0.05), (0.95, 0.45, 0.10), (1.00, 0.85, 0.30)),
    "ocean": ((0.05, 0.15, 0.30), (0.10, 0.55, 0.85), (0.80, 0.95, 1.00)),
    "forest": ((0.12, 0.20, 0.08), (0.30, 0.70, 0.25), (0.85, 0.90, 0.40)),
    "dusk": ((0.20, 0.10, 0.30), (0.70, 0.30, 0.75), (1.00, 0.70, 0.85)),
    "sand": ((0.75, 0.68, 0.50), (0.45, 0.30, 0.15), (0.20, 0.15, 0.10)),
    "slate": ((0.55, 0.58, 0.62), (0.15, 0.15, 0.20), (0.95, 0.95, 0.95)),
}
ORIENTATIONS_DEG = (0.0, 45.0, 90.0, 135.0)   # stripe orientation
STRIPE_CYCLES = (3.0, 8.0)                    # stripes per image width
LAYOUTS = {  # name -> (object centre x, y in [-1, 1], background gradient angle in degrees)
    "centre": (0.0, 0.0, 90.0),
    "left": (-0.4, 0.1, 0.0),
    "right": (0.4, -0.1, 180.0),
    "low": (0.0, 0.4, 270.0),
}
ATTRIBUTE_SIZES = (len(SHAPES), len(PALETTES), len(ORIENTATIONS_DEG), len(STRIPE_CYCLES), len(LAYOUTS))
ATTRIBUTE_BLOCKS = ("shape", "palette", "orientation", "frequency", "layout", "position")
CATEGORY_ATTRIBUTES = ATTRIBUTE_BLOCKS[:len(ATTRIBUTE_SIZES)]   # what a category fixes (categories.json)
POSITION_FEATURES = ("centre_x", "centre_y", "radius")

# image jitter
BASE_RADIUS = 0.5
CENTRE_JITTER = 0.10
RADIUS_LOG_JITTER = 0.12
ROTATION_JITTER = 0.25          # radians
ORIENTATION_JITTER_DEG = 8.0
COLOUR_JITTER = 0.04
GRADIENT_STRENGTH = 0.25
BACKGROUND_WAVES = 3
BACKGROUND_WAVE_AMPLITUDE = 0.04
STRIPE_CONTRAST = 0.7
PIXEL_NOISE = 0.01

# --- brain model -------------------------------------------------------------------------
ENERGY_GRID = 32                # image side on which the Gabor bank runs
FEATURE_GRID = 16               # side of the feature maps the pRFs read
GABOR_ENVELOPE = 0.5            # Gaussian envelope sd, in wavelengths
FEATURE_CHANNELS = tuple(f"gabor_{o:g}deg_{c:g}cyc" for c in STRIPE_CYCLES for o in ORIENTATIONS_DEG) \
    + ("luminance", "red_green", "blue_yellow")
NUM_GABOR = len(ORIENTATIONS_DEG) * len(STRIPE_CYCLES)
PRF_CENTRE_RANGE = 0.9
GABOR_SHARE = 0.7               # share of a pRF voxel's channel weight on Gabor energy (rest: colour)
CHANNEL_CONCENTRATION = 0.5     # Dirichlet concentration of channel weights
PART_JITTER = 0.2               # per-voxel relative jitter of the model-part weights
GAIN_RANGE = (0.5, 1.5)
BASELINE_SD = 0.5
NOISE_RATIO_RANGE = (2.0, 4.0)  # single-trial noise sd / signal sd per voxel
OUTSIDE_NOISE_RANGE = (0.5, 1.5)  # noise sd of GOD columns outside every ROI
OUTSIDE_FRACTION = 0.02         # GOD columns outside every ROI mask, relative to ROI voxels
MIN_GROUP = 4                   # smallest simulated ROI group


@dataclass(frozen=True)
class RoiModel:
    """Weights of the three model parts (pRF energy, attributes, global image statistics),
    pRF size at the fovea, and the emphasis of each attribute block (ATTRIBUTE_BLOCKS order)."""

    prf: float
    attributes: float
    global_stats: float
    prf_sigma: float = 0.1
    emphasis: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5, 0.5, 0.5)


ROI_MODELS = {
    "V1": RoiModel(1.0, 0.0, 0.0, prf_sigma=0.07),
    "V2": RoiModel(1.0, 0.0, 0.0, prf_sigma=0.10),
    "V3": RoiModel(1.0, 0.0, 0.0, prf_sigma=0.14),
    "V4": RoiModel(0.6, 0.4, 0.0, prf_sigma=0.22, emphasis=(0.6, 0.6, 0.6, 0.6, 0.3, 0.3)),
    "LOC": RoiModel(0.0, 1.0, 0.3, emphasis=(1.0, 0.3, 0.3, 0.3, 0.2, 0.3)),
    "FFA": RoiModel(0.0, 1.0, 0.3, emphasis=(0.7, 1.0, 0.2, 0.2, 0.2, 0.2)),
    "PPA": RoiModel(0.0, 1.0, 0.3, emphasis=(0.2, 0.4, 0.3, 0.3, 1.0, 0.6)),
    "HVC": RoiModel(0.0, 1.0, 0.3),
    "EarlyVis": RoiModel(1.0, 0.0, 0.0, prf_sigma=0.10),
    "OPA": RoiModel(0.0, 1.0, 0.3, emphasis=(0.3, 0.2, 0.5, 0.3, 0.8, 1.0)),
    "RSC": RoiModel(0.0, 1.0, 0.3, emphasis=(0.2, 0.6, 0.2, 0.2, 1.0, 0.4)),
}

# Published group sizes (GOD: V1, V2, V3, V4, LOC, FFA, PPA, HVC-only voxels).
GOD_GROUPS = ("V1", "V2", "V3", "V4", "LOC", "FFA", "PPA", "HVC")
GOD_PAPER_SIZES = {
    "sbj_1": (1004, 801, 476, 588, 431, 249, 157, 760),
    "sbj_2": (757, 727, 603, 416, 372, 124, 576, 829),
    "sbj_3": (872, 826, 605, 630, 770, 262, 306, 372),
    "sbj_4": (719, 652, 676, 597, 494, 236, 308, 451),
    "sbj_5": (659, 676, 649, 729, 661, 301, 246, 449),
}
# BOLD5000: which ROI a four-group subject lacks is not published; LOC is dropped here.
BOLD_PAPER_SIZES = {
    "CSI1": {"EarlyVis": 495, "LOC": 342, "OPA": 288, "PPA": 331, "RSC": 229},
    "CSI2": {"EarlyVis": 495, "OPA": 180, "PPA": 370, "RSC": 84},
    "CSI3": {"EarlyVis": 607, "OPA": 392, "PPA": 273, "RSC": 194},
    "CSI4": {"EarlyVis": 764, "LOC": 872, "OPA": 614, "PPA": 344, "RSC": 193},
}


@dataclass(frozen=True)
class SimScale:
    """How much to simulate."""

    god_subjects: tuple[str, ...]
    god_voxel_factor: float          # times the published group sizes
    god_train_categories: int
    god_images_per_category: int
    god_test_categories: int         # one test image each, categories disjoint from training
    god_test_repeats: int
    bold_subjects: tuple[str, ...]
    bold_voxel_factor: float
    bold_categories: int
    bold_train_images: int           # each shown once
    bold_test_images: int            # the repeated list
    bold_test_repeats: int
    bold_trials_per_run: int
    bold_runs_per_session: int
    bold_partial_subject: str | None = None   # sees part of the training images and not all test images
    bold_partial_fraction: float = 0.6
    bold_partial_unseen_test: int = 1
    image_size: int = 64


SCALES = {
    "tiny": SimScale(god_subjects=("sbj_1", "sbj_2"), god_voxel_factor=0.05, god_train_categories=20,
                     god_images_per_category=3, god_test_categories=10, god_test_repeats=3,
                     bold_subjects=("CSI1", "CSI2"), bold_voxel_factor=0.1, bold_categories=12,
                     bold_train_images=60, bold_test_images=10, bold_test_repeats=3,
                     bold_trials_per_run=10, bold_runs_per_session=3, bold_partial_subject="CSI2",
                     bold_partial_unseen_test=2, image_size=64),
    "demo": SimScale(god_subjects=("sbj_1", "sbj_2"), god_voxel_factor=0.2, god_train_categories=60,
                     god_images_per_category=6, god_test_categories=25, god_test_repeats=5,
                     bold_subjects=("CSI1",), bold_voxel_factor=0.5, bold_categories=40,
                     bold_train_images=360, bold_test_images=25, bold_test_repeats=4,
                     bold_trials_per_run=30, bold_runs_per_session=4, image_size=64),
    "full": SimScale(god_subjects=god.GOD_SUBJECTS, god_voxel_factor=1.0, god_train_categories=150,
                     god_images_per_category=8, god_test_categories=50, god_test_repeats=35,
                     bold_subjects=bold.BOLD_SUBJECTS, bold_voxel_factor=1.0, bold_categories=100,
                     bold_train_images=4803, bold_test_images=113, bold_test_repeats=4,
                     bold_trials_per_run=37, bold_runs_per_session=10, bold_partial_subject="CSI4",
                     bold_partial_unseen_test=10, image_size=256),
}

# Random streams, one per purpose, so that e.g. one subject does not shift another's draws.
STREAM_CATEGORIES, STREAM_GOD_IMAGES, STREAM_BOLD_IMAGES, STREAM_GOD_SUBJECT, STREAM_BOLD_SUBJECT = range(5)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


# ====================================================================================
# Images
# ====================================================================================
def _shape_distance(shape: str, px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    """Signed distance-like field of `shape` (negative inside), local coordinates [S, S]."""
    rho = np.hypot(px, py)
    if shape == "disc":
        return rho - r
    if shape == "square":
        return np.maximum(np.abs(px), np.abs(py)) - 0.8 * r
    if shape == "triangle":
        normals = np.deg2rad(90.0 + 120.0 * np.arange(3))
        return np.max([px * np.cos(a) + py * np.sin(a) for a in normals], axis=0) - 0.5 * r
    if shape == "cross":
        arm = 0.3 * r
        bar_h = np.maximum(np.abs(px) - r, np.abs(py) - arm)
        bar_v = np.maximum(np.abs(px) - arm, np.abs(py) - r)
        return np.minimum(bar_h, bar_v)
    if shape == "ring":
        return np.abs(rho - 0.7 * r) - 0.28 * r
    if shape == "star":
        return rho - r * (0.7 + 0.3 * np.cos(5.0 * np.arctan2(py, px)))
    raise ValueError(shape)


def render_image(attributes: np.ndarray, size: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render one image of the category with `attributes` (shape, palette, orientation, frequency,
    layout indices) and fresh jitter. Returns uint8 [S, S, 3] and (centre_x, centre_y, radius)."""
    shape = SHAPES[attributes[0]]
    background, foreground, accent = (np.clip(np.array(c) + rng.normal(0, COLOUR_JITTER, 3), 0, 1)
                                      for c in PALETTES[list(PALETTES)[attributes[1]]])
    theta = np.deg2rad(ORIENTATIONS_DEG[attributes[2]] + rng.normal(0, ORIENTATION_JITTER_DEG))
    cycles = STRIPE_CYCLES[attributes[3]]
    base_x, base_y, gradient_deg = LAYOUTS[list(LAYOUTS)[attributes[4]]]
    cx, cy = base_x + rng.normal(0, CENTRE_JITTER), base_y + rng.normal(0, CENTRE_JITTER)
    radius = BASE_RADIUS * np.exp(rng.normal(0, RADIUS_LOG_JITTER))
    rotation = rng.normal(0, ROTATION_JITTER)

    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(coords, coords, indexing="ij")  # [S, S] each, y down
    gradient = x * np.cos(np.deg2rad(gradient_deg)) + y * np.sin(np.deg2rad(gradient_deg))
    waves = sum(np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * (x * np.cos(a) + y * np.sin(a))
                       + rng.uniform(0, 2 * np.pi))
                for a in rng.uniform(0, np.pi, BACKGROUND_WAVES))
    back = background * (1.0 + GRADIENT_STRENGTH * gradient + BACKGROUND_WAVE_AMPLITUDE * waves)[..., None]

    cos_r, sin_r = np.cos(rotation), np.sin(rotation)
    px, py = cos_r * (x - cx) + sin_r * (y - cy), -sin_r * (x - cx) + cos_r * (y - cy)
    pixel = 2.0 / size
    alpha = np.clip(0.5 - _shape_distance(shape, px, py, radius) / pixel, 0.0, 1.0)[..., None]
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(np.pi * cycles * (x * np.cos(theta) + y * np.sin(theta)) + phase)
    front = foreground + (accent - foreground) * (STRIPE_CONTRAST * stripes)[..., None]

    image = alpha * front + (1.0 - alpha) * back + rng.normal(0, PIXEL_NOISE, (size, size, 3))
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), np.array([cx, cy, radius])


def render_images(attributes: np.ndarray, size: int, rng: np.random.Generator, desc: str,
                  progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Render one image per row of `attributes` [n, 5]: uint8 [n, S, S, 3] and positions [n, 3]."""
    images = np.empty((len(attributes), size, size, 3), dtype=np.uint8)
    positions = np.empty((len(attributes), len(POSITION_FEATURES)))
    for i in tqdm(range(len(attributes)), desc=desc, disable=not progress, leave=False):
        images[i], positions[i] = render_image(attributes[i], size, rng)
    return images, positions


# ====================================================================================
# Image features the voxels read
# ====================================================================================
def _gabor_bank() -> np.ndarray:
    """Frequency responses of the complex Gabor filters: complex [NUM_GABOR, G, G]."""
    coords = (np.arange(ENERGY_GRID) - ENERGY_GRID // 2) / ENERGY_GRID  # image widths
    y, x = np.meshgrid(coords, coords, indexing="ij")
    filters = []
    for cycles in STRIPE_CYCLES:
        sigma = GABOR_ENVELOPE / cycles
        for degrees in ORIENTATIONS_DEG:
            t = np.deg2rad(degrees)
            kernel = np.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2)) \
                * np.exp(2j * np.pi * cycles * (x * np.cos(t) + y * np.sin(t)))
            filters.append(np.fft.fft2(np.fft.ifftshift(kernel / np.abs(kernel).sum())))
    return np.stack(filters)


def feature_maps(images: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Local oriented energy and colour: float32 [n, C, FEATURE_GRID**2], C = len(FEATURE_CHANNELS).

    Each channel is standardised over all images and positions.
    """
    bank = _gabor_bank()
    pool = ENERGY_GRID // FEATURE_GRID
    out = []
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(images[start:start + chunk]).permute(0, 3, 1, 2).float() / 255.0  # [n, 3, S, S]
        x = F.interpolate(x, size=(ENERGY_GRID, ENERGY_GRID), mode="area").numpy()           # [n, 3, G, G]
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        lum = x.mean(axis=1)                                                                # [n, G, G]
        spectrum = np.fft.fft2(lum - lum.mean(axis=(1, 2), keepdims=True))[:, None]         # [n, 1, G, G]
        energy = np.abs(np.fft.ifft2(spectrum * bank[None]))                                # [n, 8, G, G]
        colour = np.stack([lum, r - g, b - 0.5 * (r + g)], axis=1)                          # [n, 3, G, G]
        maps = np.concatenate([energy, colour], axis=1)                                     # [n, C, G, G]
        n, c = maps.shape[:2]
        maps = maps.reshape(n, c, FEATURE_GRID, pool, FEATURE_GRID, pool).mean(axis=(3, 5))  # [n, C, g, g]
        out.append(maps.reshape(n, c, FEATURE_GRID * FEATURE_GRID))                          # [n, C, g*g]
    maps = np.concatenate(out)
    mean = maps.mean(axis=(0, 2), keepdims=True)
    std = maps.std(axis=(0, 2), keepdims=True) + 1e-8
    return ((maps - mean) / std).astype(np.float32)


def attribute_vectors(attributes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """One-hot category attributes followed by the image's position features: [n, A]."""
    blocks = [np.eye(size)[attributes[:, k]] for k, size in enumerate(ATTRIBUTE_SIZES)]
    return np.concatenate(blocks + [positions], axis=1)


def attribute_names() -> list[str]:
    values = (SHAPES, tuple(PALETTES), ORIENTATIONS_DEG, STRIPE_CYCLES, tuple(LAYOUTS))
    names = [f"{block}={v}" for block, vs in zip(ATTRIBUTE_BLOCKS, values) for v in vs]
    return names + list(POSITION_FEATURES)


# ====================================================================================
# Voxels
# ====================================================================================
@dataclass
class VoxelPopulation:
    """Per-voxel parameters of the response model (V voxels)."""

    roi: np.ndarray              # int [V] index into roi_names
    roi_names: list[str]
    prf_centre: np.ndarray       # [V, 2] (x, y) in [-1, 1]
    prf_sigma: np.ndarray        # [V]
    channel_weights: np.ndarray  # [V, C] weights of the pRF-pooled feature channels
    global_weights: np.ndarray   # [V, C] weights of image-wide channel means
    attribute_weights: np.ndarray  # [V, A]
    part_coef: np.ndarray        # [V, 3] weight of (pRF, attributes, global) parts
    gain: np.ndarray             # [V]
    baseline: np.ndarray         # [V]
    noise_sd: np.ndarray         # [V]
    part_mean: np.ndarray = field(default=None)  # [V, 3] filled by `responses`
    part_std: np.ndarray = field(default=None)
    total_mean: np.ndarray = field(default=None)  # [V]
    total_std: np.ndarray = field(default=None)


def make_population(rng: np.random.Generator, sizes: dict[str, int]) -> VoxelPopulation:
    """Draw voxels for each ROI in `sizes` (ordered), following ROI_MODELS."""
    names = list(sizes)
    roi = np.concatenate([np.full(n, k) for k, n in enumerate(sizes.values())])
    v, c, a = len(roi), len(FEATURE_CHANNELS), sum(ATTRIBUTE_SIZES) + len(POSITION_FEATURES)
    models = [ROI_MODELS[names[k]] for k in roi]
    centre = rng.uniform(-PRF_CENTRE_RANGE, PRF_CENTRE_RANGE, (v, 2))
    eccentricity = np.hypot(centre[:, 0], centre[:, 1])
    sigma = np.array([m.prf_sigma for m in models]) * (0.6 + 0.8 * eccentricity)
    gabor = rng.dirichlet(np.full(NUM_GABOR, CHANNEL_CONCENTRATION), v) * GABOR_SHARE
    colour = rng.dirichlet(np.full(c - NUM_GABOR, CHANNEL_CONCENTRATION), v) * (1 - GABOR_SHARE)
    block_of = np.repeat(np.arange(len(ATTRIBUTE_BLOCKS)), ATTRIBUTE_SIZES + (len(POSITION_FEATURES),))
    emphasis = np.array([m.emphasis for m in models])[:, block_of]  # [V, A]
    coef = np.array([(m.prf, m.attributes, m.global_stats) for m in models])
    gain = rng.uniform(*GAIN_RANGE, v)
    return VoxelPopulation(
        roi=roi, roi_names=names, prf_centre=centre, prf_sigma=sigma,
        channel_weights=np.concatenate([gabor, colour], axis=1),
        global_weights=rng.normal(0, 1, (v, c)),
        attribute_weights=rng.normal(0, 1, (v, a)) * emphasis,
        part_coef=coef * rng.uniform(1 - PART_JITTER, 1 + PART_JITTER, (v, 3)),
        gain=gain, baseline=rng.normal(0, BASELINE_SD, v),
        noise_sd=gain * rng.uniform(*NOISE_RATIO_RANGE, v))


def _zscore_columns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, std = x.mean(axis=0), x.std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    return (x - mean) / safe, mean, std


def responses(pop: VoxelPopulation, maps: np.ndarray, attrs: np.ndarray) -> np.ndarray:
    """Noise-free responses [n_images, V] to images with feature `maps` [n, C, P] and `attrs` [n, A].

    Each part is z-scored per voxel over the given images, the parts are mixed
    with `part_coef`, z-scored again, then scaled by `gain` and shifted by `baseline`.
    Fills the population's normalisation statistics.
    """
    coords = (np.arange(FEATURE_GRID) + 0.5) / FEATURE_GRID * 2.0 - 1.0
    gy, gx = np.meshgrid(coords, coords, indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)                               # [P, 2]
    dist2 = ((pop.prf_centre[:, None, :] - grid[None]) ** 2).sum(-1)                # [V, P]
    prf = np.exp(-dist2 / (2 * pop.prf_sigma[:, None] ** 2))
    prf /= prf.sum(axis=1, keepdims=True)
    prf_part = sum((maps[:, k, :] @ prf.T) * pop.channel_weights[:, k]                 # [n, V]
                   for k in range(maps.shape[1]))
    attr_part = attrs @ pop.attribute_weights.T                                       # [n, V]
    global_part = maps.mean(axis=2) @ pop.global_weights.T                            # [n, V]
    parts = [_zscore_columns(p) for p in (prf_part, attr_part, global_part)]
    pop.part_mean = np.stack([m for _, m, _ in parts], axis=1)
    pop.part_std = np.stack([s for _, _, s in parts], axis=1)
    mixed = sum(z * pop.part_coef[:, k] for k, (z, _, _) in enumerate(parts))
    total, pop.total_mean, pop.total_std = _zscore_columns(mixed)
    return pop.baseline + pop.gain * total


def population_arrays(pop: VoxelPopulation) -> dict[str, np.ndarray]:
    """The population's parameters as arrays for the ground-truth file."""
    arrays = {k: np.asarray(v) for k, v in asdict(pop).items() if k not in ("roi", "roi_names")}
    arrays.update(voxel_roi=pop.roi.astype(np.int64), roi_names=np.array(pop.roi_names),
                  feature_channels=np.array(FEATURE_CHANNELS), attribute_names=np.array(attribute_names()))
    return arrays


def scaled_sizes(sizes: dict[str, int], factor: float) -> dict[str, int]:
    return {roi: max(MIN_GROUP, int(round(n * factor))) for roi, n in sizes.items()}


# ====================================================================================
# Writing
# ====================================================================================
def _save_npz(path: Path, *arrays: np.ndarray, **named: np.ndarray) -> None:
    """np.savez: keyword arrays are stored first (in order), then arr_0, arr_1, ..."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, *arrays, **named)


def _write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


@dataclass
class Categories:
    """The category table: attributes, WordNet-style numbers and class ids."""

    attributes: np.ndarray   # int [K, 5]
    wordnet: np.ndarray      # int [K] 8-digit-style number, 'n%08d'
    class_id: np.ndarray     # int [K] key in imagenet_class_index.json

    def name(self, k: int) -> str:
        a = self.attributes[k]
        return "_".join([SHAPES[a[0]], list(PALETTES)[a[1]], f"{ORIENTATIONS_DEG[a[2]]:g}deg",
                         f"{STRIPE_CYCLES[a[3]]:g}cyc", list(LAYOUTS)[a[4]]])


def make_categories(rng: np.random.Generator, count: int) -> Categories:
    combos = np.array(np.meshgrid(*[np.arange(s) for s in ATTRIBUTE_SIZES], indexing="ij")).reshape(5, -1).T
    if count > len(combos):
        raise ConfigError(describe("simulation scale", f"at most {len(combos)} categories", count))
    chosen = combos[rng.choice(len(combos), count, replace=False)]
    wordnet = rng.choice(np.arange(1_000_000, 10_000_000), count, replace=False)
    return Categories(attributes=chosen, wordnet=wordnet, class_id=rng.permutation(count))


def _write_god(out: Path, gt: Path, scale: SimScale, cats: Categories, god_cats: np.ndarray,
               seed: int, size: int, progress: bool) -> dict:
    rng = _rng(seed, STREAM_GOD_IMAGES)
    n_train_cat = scale.god_train_categories
    train_cat = np.repeat(god_cats[:n_train_cat], scale.god_images_per_category)  # [N_train_img]
    test_cat = god_cats[n_train_cat:]                                              # [N_test]
    train_img, train_pos = render_images(cats.attributes[train_cat], size, rng, "GOD train images", progress)
    test_img, test_pos = render_images(cats.attributes[test_cat], size, rng, "GOD test images", progress)
    folder = out / GOD_DIR
    _save_npz(folder / god.IMAGES_FILE, **{god.TRAIN_IMAGES_KEY: train_img, god.TEST_IMAGES_KEY: test_img})
    index = {str(int(cats.class_id[k])): [f"n{cats.wordnet[k]:08d}", cats.name(k)]
             for k in np.argsort(cats.class_id)}
    (folder / god.CLASS_INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    for file, cat in ((god.TRAIN_LABEL_FILE, train_cat), (god.TEST_LABEL_FILE, test_cat)):
        numbers = rng.choice(np.arange(1, 100_000), len(cat), replace=False)
        _write_text(folder / file, [f"{cats.wordnet[k]}.{m:06d},n{cats.wordnet[k]:08d}_{m}.JPEG"
                                    for k, m in zip(cat, numbers)])

    images = np.concatenate([train_img, test_img])
    maps = feature_maps(images)
    attrs = attribute_vectors(cats.attributes[np.concatenate([train_cat, test_cat])],
                              np.concatenate([train_pos, test_pos]))
    n_train_img = len(train_img)
    for s, subject in enumerate(tqdm(scale.god_subjects, desc="GOD subjects", disable=not progress,
                                     leave=False)):
        srng = _rng(seed, STREAM_GOD_SUBJECT, s)
        sizes = scaled_sizes(dict(zip(GOD_GROUPS, GOD_PAPER_SIZES[subject])), scale.god_voxel_factor)
        pop = make_population(srng, sizes)
        clean_roi = responses(pop, maps, attrs)                                      # [n_img, V]
        v = clean_roi.shape[1]
        n_outside = int(round(OUTSIDE_FRACTION * v))
        columns = srng.permutation(v + n_outside)                                    # voxel j -> file column
        num_columns = v + n_outside
        clean = np.empty((len(images), num_columns))
        noise_sd = np.empty(num_columns)
        clean[:, columns[:v]] = clean_roi
        noise_sd[columns[:v]] = pop.noise_sd
        outside = columns[v:]
        clean[:, outside] = srng.normal(0, BASELINE_SD, n_outside)
        noise_sd[outside] = srng.uniform(*OUTSIDE_NOISE_RANGE, n_outside)

        order = srng.permutation(n_train_img)                                         # arr_3
        train = clean[order] + srng.normal(0, 1, (n_train_img, num_columns)) * noise_sd
        test_clean = clean[n_train_img:]
        repeats = np.repeat(test_clean, scale.god_test_repeats, axis=0)
        repeats = repeats + srng.normal(0, 1, repeats.shape) * noise_sd
        averaged = repeats.reshape(len(test_clean), scale.god_test_repeats, num_columns).mean(axis=1)

        masks = {}
        group_cols = np.split(columns[:v], np.cumsum(list(sizes.values()))[:-1])
        for name, cols in zip(GOD_GROUPS, group_cols):
            masks[name] = np.zeros(num_columns, dtype=bool)
            masks[name][cols] = True
        masks["LVC"] = masks["V1"] | masks["V2"] | masks["V3"]
        masks["HVC"] = masks["LOC"] | masks["FFA"] | masks["PPA"] | masks["HVC"]
        masks["VC"] = masks["LVC"] | masks["V4"] | masks["HVC"]
        masks = {name: masks[name] for name in god.GOD_MASK_ORDER}
        _save_npz(folder / f"{subject}.npz", train.astype(FMRI_DTYPE), repeats.astype(FMRI_DTYPE),
                  averaged.astype(FMRI_DTYPE), order.astype(np.int64), **masks)

        loader_columns = np.concatenate([np.sort(c) for c in group_cols])
        voxel_roi = np.full(num_columns, -1, dtype=np.int64)
        voxel_roi[columns[:v]] = pop.roi
        arrays = population_arrays(pop)
        arrays = {k: val for k, val in arrays.items() if k not in ("noise_sd", "voxel_roi")}
        _save_npz(gt / "GOD" / f"{subject}.npz", train_clean=clean[:n_train_img].astype(np.float32),
                  test_clean=test_clean.astype(np.float32), noise_sd=noise_sd.astype(np.float32),
                  column_roi=voxel_roi, population_columns=columns[:v].astype(np.int64),
                  loader_columns=loader_columns.astype(np.int64),
                  train_category=train_cat.astype(np.int64), test_category=test_cat.astype(np.int64),
                  **arrays)
    return {"subjects": list(scale.god_subjects), "train_images": n_train_img, "test_images": len(test_img),
            "test_repeats": scale.god_test_repeats}


def _bold_sessions(names: list[str], scale: SimScale) -> list[list[list[str]]]:
    per_session = scale.bold_trials_per_run * scale.bold_runs_per_session
    sessions = [names[i:i + per_session] for i in range(0, len(names), per_session)]
    return [[s[i:i + scale.bold_trials_per_run] for i in range(0, len(s), scale.bold_trials_per_run)]
            for s in sessions]


def _write_bold(out: Path, gt: Path, scale: SimScale, cats: Categories, bold_cats: np.ndarray,
                seed: int, size: int, progress: bool) -> dict:
    rng = _rng(seed, STREAM_BOLD_IMAGES)
    n_train, n_test = scale.bold_train_images, scale.bold_test_images
    image_cat = bold_cats[rng.integers(0, len(bold_cats), n_train + n_test)]      # [n_pool]
    images, positions = render_images(cats.attributes[image_cat], size, rng, "BOLD5000 images", progress)
    names = [f"sim{cats.wordnet[k]}_{i:05d}.jpg" for i, k in enumerate(image_cat)]
    train_names, test_names = names[:n_train], names[n_train:]
    folder = out / BOLD_DIR
    img_dict = {name: images[i] for i, name in enumerate(names)}
    (folder / bold.IMG_DICT_FILE).parent.mkdir(parents=True, exist_ok=True)
    np.save(folder / bold.IMG_DICT_FILE, np.array(img_dict, dtype=object), allow_pickle=True)
    _write_text(folder / bold.REPEATED_FILE, test_names)
    _write_text(folder / bold.STIMULI_DIR / "Image_Labels" / "simulated_image_categories.txt",
                [f"{n} {cats.name(k)}" for n, k in zip(names, image_cat)])

    maps = feature_maps(images)
    attrs = attribute_vectors(cats.attributes[image_cat], positions)
    row_of = {n: i for i, n in enumerate(names)}
    for s, subject in enumerate(tqdm(scale.bold_subjects, desc="BOLD5000 subjects", disable=not progress,
                                     leave=False)):
        srng = _rng(seed, STREAM_BOLD_SUBJECT, s)
        seen_train, seen_test = train_names, test_names
        if subject == scale.bold_partial_subject:
            seen_train = train_names[:int(round(scale.bold_partial_fraction * n_train))]
            seen_test = test_names[:n_test - scale.bold_partial_unseen_test]
        shown = [(n, False) for n in seen_train] \
            + [(n, True) for n in seen_test for _ in range(scale.bold_test_repeats)]
        shown = [shown[i] for i in srng.permutation(len(shown))]
        for k, runs in enumerate(_bold_sessions(shown, scale)):
            session = folder / bold.PRESENTATION_DIR / subject / f"{subject}_sess{k + 1:02d}"
            for r, run in enumerate(runs):
                _write_text(session / f"{subject}_sess{k + 1:02d}_run{r + 1:02d}.txt",
                            [f"{bold.REPEAT_PREFIX}{n}" if rep else n for n, rep in run])

        sizes = scaled_sizes(BOLD_PAPER_SIZES[subject], scale.bold_voxel_factor)
        pop = make_population(srng, sizes)
        clean = responses(pop, maps, attrs)                                           # [n_pool, V]
        trial_image = np.array([row_of[n] for n, _ in shown], dtype=np.int64)
        betas = clean[trial_image] + srng.normal(0, 1, (len(trial_image), clean.shape[1])) * pop.noise_sd
        start = 0
        for roi, n in sizes.items():
            left = int(srng.integers(n // 2 - n // 10, n // 2 + n // 10 + 1))
            for hemi, width in zip(bold.HEMISPHERES, (left, n - left)):
                path = folder / bold.BETAS_DIR / bold.BETAS_FILE.format(subject=subject, hemi=hemi, roi=roi)
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, betas[:, start:start + width].astype(FMRI_DTYPE))
                start += width
        _save_npz(gt / "BOLD5000" / f"{subject}.npz", image_names=np.array(names),
                  image_clean=clean.astype(np.float32), image_category=image_cat.astype(np.int64),
                  trial_image=trial_image, **population_arrays(pop))
    return {"subjects": list(scale.bold_subjects), "train_images": n_train, "test_images": n_test,
            "test_repeats": scale.bold_test_repeats, "partial_subject": scale.bold_partial_subject}


GROUND_TRUTH_README = """\
# Simulated-brain ground truth

Written by `python -m datasets.simulate`; see datasets/README.md for the generative model.
Every measured trial = noise-free response + independent Gaussian noise with sd `noise_sd`
(per voxel). All responses are in the raw (un-normalised) units of the data files.

GOD/<subject>.npz (voxel axis = the columns of arr_0 in Kamitani/npz/<subject>.npz):
  train_clean [N_train_img, N]  noise-free response to each row of images_256.npz train_images
  test_clean  [N_test, N]       noise-free response to each test image
  noise_sd    [N]               single-trial noise sd
  column_roi  [N]               index into roi_names, -1 = column outside every ROI mask
  loader_columns [V]            file columns in the loader's voxel order (x[:, loader_columns])
  population_columns [V]        file column of each row of the population arrays below
  train_category, test_category category id per image (see categories.json)
BOLD5000/<subject>.npz (voxel axis = the loader's voxel order: ROI files concatenated):
  image_names [n_img], image_clean [n_img, V], image_category [n_img]
  trial_image [n_trials]        row of image_names shown at each trial (the beta rows)
  noise_sd [V], voxel_roi [V]
Population arrays in both (one row per ROI voxel):
  prf_centre [V,2], prf_sigma [V]     Gaussian pRF over a 16x16 grid spanning the image
  channel_weights [V,C]               weights of pRF-pooled channels (feature_channels)
  global_weights [V,C]                weights of image-wide channel means
  attribute_weights [V,A]             weights of category attributes (attribute_names)
  part_coef [V,3]                     mixing of the (pRF, attribute, global) parts
  part_mean, part_std [V,3], total_mean, total_std [V]   z-scoring used over the image pool
  gain [V], baseline [V]              clean = baseline + gain * z(mixed parts)
categories.json: every category's attributes, WordNet-style id and class id.
"""


def written_files(root: Path) -> list[str]:
    """Relative paths of every file under `root` (what the simulator wrote, recorded in the manifest)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def foreign_entries(out: Path, manifest: dict) -> list[str]:
    """Files and folders under `out` that the simulator did not write (its manifest lists what it wrote)."""
    recorded = manifest.get(WRITTEN_KEY)
    if recorded is None:   # a manifest from before the list was kept: only the three top-level folders are ours
        ours = {GOD_DIR.parts[0], str(BOLD_DIR), GROUND_TRUTH_DIR}
        return sorted(p.name for p in out.iterdir() if p.name not in ours)
    files = set(recorded) | {f"{GROUND_TRUTH_DIR}/{MANIFEST_FILE}"}
    folders = {str(parent) for f in files for parent in Path(f).parents if str(parent) != "."}
    return sorted(rel for p in out.rglob("*")
                  if (rel := str(p.relative_to(out))) not in (folders if p.is_dir() and not p.is_symlink() else files))


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(describe(out, "a folder to write the simulated datasets into", "a file"))
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(describe(out, "a new or empty folder (or --overwrite)", "a non-empty folder"))
        manifest_path = out / GROUND_TRUTH_DIR / MANIFEST_FILE
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = None
        if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
            raise ConfigError(describe(out, f"a folder written by {GENERATOR} (with {manifest_path}) to overwrite",
                                       "a folder it did not write; refusing to delete it"))
        foreign = foreign_entries(out, manifest)
        if foreign:
            raise ConfigError(describe(out, f"only what {GENERATOR} wrote there, to overwrite",
                                       f"{len(foreign)} other files or folders, e.g. {foreign[:MAX_LISTED]}; "
                                       "move them out first (--overwrite never deletes them)"))


def clean_leftovers(out: Path) -> list[Path]:
    """Remove hidden work and `.old` folders a killed earlier run left beside `out`; return them.

    Only folders named like the simulator's own (`.<out>.<random>`, `.<out>.old.<random>`) that hold
    nothing but simulator output (its three top-level folders, or a previous tree under `<out>`).
    """
    ours = {GOD_DIR.parts[0], str(BOLD_DIR), GROUND_TRUTH_DIR}
    removed = []
    if not out.parent.is_dir():
        return removed
    for leftover in out.parent.glob(f".{out.name}.*"):
        if not leftover.is_dir() or leftover.is_symlink():
            continue
        inside = {p.name for p in leftover.iterdir()}
        is_old = leftover.name.startswith(f".{out.name}.old.") and inside <= {out.name}
        is_work = inside <= ours
        if is_old or is_work:
            shutil.rmtree(leftover)
            removed.append(leftover)
    return removed


def simulate(out: str | Path, *, scale: str = "tiny", seed: int = 0, image_size: int | None = None,
             overwrite: bool = False, progress: bool = True) -> Path:
    """Write simulated GOD and BOLD5000 trees and their ground truth under `out`; return `out`.

    The tree is built in a temporary sibling folder and moved into place at the end.
    """
    if scale not in SCALES:
        raise ConfigError(describe("--scale", f"one of {tuple(SCALES)}", repr(scale)))
    spec = SCALES[scale]
    size = spec.image_size if image_size is None else int(image_size)
    if size < ENERGY_GRID:
        raise ConfigError(describe("--image-size", f"at least {ENERGY_GRID}", size))
    out = Path(out)
    for leftover in clean_leftovers(out):
        print(f"note: removed {leftover}, left behind by an interrupted earlier run", file=sys.stderr)
    _check_target(out, overwrite)
    with staged_folder(out) as work:
        gt = work / GROUND_TRUTH_DIR
        n_god = spec.god_train_categories + spec.god_test_categories
        cats = make_categories(_rng(seed, STREAM_CATEGORIES), n_god + spec.bold_categories)
        god_info = _write_god(work, gt, spec, cats, np.arange(n_god), seed, size, progress)
        bold_info = _write_bold(work, gt, spec, cats, np.arange(n_god, n_god + spec.bold_categories),
                                seed, size, progress)
        table = [{"id": k, "name": cats.name(k), "class_id": int(cats.class_id[k]),
                  "wnid": f"n{cats.wordnet[k]:08d}", "used_by": "GOD" if k < n_god else "BOLD5000",
                  **{block: int(cats.attributes[k, b]) for b, block in enumerate(CATEGORY_ATTRIBUTES)}}
                 for k in range(len(cats.class_id))]
        (gt / "categories.json").write_text(json.dumps(table, indent=1) + "\n")
        (gt / "README.md").write_text(GROUND_TRUTH_README)
        manifest = {WRITTEN_KEY: written_files(work), "generator": GENERATOR, "scale": scale, "seed": seed, "image_size": size,
                    "fmri_dtype": np.dtype(FMRI_DTYPE).name, "GOD": god_info, "BOLD5000": bold_info,
                    "noise_ratio_range": NOISE_RATIO_RANGE, "scale_spec": asdict(spec)}
        (gt / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write simulated GOD and BOLD5000 datasets with ground truth.")
    parser.add_argument("--out", required=True, help="folder to create (e.g. dataset/simulated)")
    parser.add_argument("--scale", default="tiny", choices=tuple(SCALES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=None, help="image side (default: the scale's)")
    parser.add_argument("--overwrite", action="store_true", help="replace a folder this tool wrote before")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (also off when stdout or stderr is not a terminal)")
    args = parser.parse_args(argv)

    def body(_folders: RunFolders) -> None:
        out = simulate(args.out, scale=args.scale, seed=args.seed, image_size=args.image_size,
                       overwrite=args.overwrite,
                       progress=progress_wanted(not args.no_progress))
        print(f"wrote {out}/{GOD_DIR}, {out}/{BOLD_DIR} and {out}/{GROUND_TRUTH_DIR}")

    return guarded(body, "python -m datasets.simulate")


if __name__ == "__main__":
    sys.exit(main())
