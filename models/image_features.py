"""Image features: the target of fMRI decoding and the condition of MaskGIT.

One interface, `ImageFeatureExtractor`: `extractor(images [B, 3, H, W] in [0, 1])
-> [B, dim]`, plus `describe()` for provenance. Backends:

- 'open_clip': the paper's CLIP image tower (ViT-H-14, 1024-d). open_clip is an
  optional dependency and its weights come only from a local file.
- 'handcrafted': deterministic, weight-free features (colour statistics, a
  coarse colour histogram, a spatial grid of mean colours, Gabor energies of
  luminance and chroma pooled over a spatial grid at three scales, and a
  figure-centred polar shape descriptor), projected to `dim` by a fixed-seed
  random matrix. Used for demos and tests: the stand-in for CLIP, which names an
  object's shape wherever it is; so must these features.

`cached_features` computes features of a uint8 image array once and keeps them
in an `.npy` keyed by a hash of the images and of the extractor's description.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.checkpoints import extract_state_dict, load_state_dict_strict, safe_torch_load
from utils.errors import ConfigError, DataError, LEAError, describe
from utils.io import atomic_save_npy, read_cache

PIXEL_RANGE_TOLERANCE = 1e-3   # images may overshoot [0, 1] by this much (resampling ringing)


class ImageFeatureExtractor(ABC):
    """Maps float images `[B, 3, H, W]` in [0, 1] to features `[B, dim]`."""

    name: str
    dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        with torch.no_grad():
            feats = self.extract(images.float())                  # [B, dim]
        if feats.shape != (images.shape[0], self.dim):
            raise LEAError(describe(f"{self.name} features", f"shape [{images.shape[0]}, {self.dim}]",
                                    list(feats.shape)))
        return feats

    @abstractmethod
    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """`images [B, 3, H, W]` float in [0, 1] -> `[B, dim]`."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able provenance: backend name, options, weights used."""


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        found = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(describe("images", "a tensor [B, 3, H, W]", found))
    if not torch.is_floating_point(images):
        raise DataError(describe("images", "float pixels in [0, 1]", f"dtype {images.dtype}"))
    lo, hi = float(images.min()), float(images.max())
    if lo < -PIXEL_RANGE_TOLERANCE or hi > 1 + PIXEL_RANGE_TOLERANCE:
        raise DataError(describe("images", "pixel values in [0, 1]", f"range [{lo:.3g}, {hi:.3g}]"))


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


# ---------------------------------------------------------------------------
# Weight-free features
# ---------------------------------------------------------------------------

WORK_SIZE = 64                    # images are resampled to WORK_SIZE x WORK_SIZE first
HIST_BINS = 4                     # per channel; joint RGB histogram of HIST_BINS**3 bins
LAYOUT_GRID = 4                   # mean colour over a LAYOUT_GRID x LAYOUT_GRID grid
GABOR_GRID = 4                    # Gabor energy pooled over a GABOR_GRID x GABOR_GRID grid
GABOR_ORIENTATIONS = 4            # 0, 45, 90, 135 degrees
GABOR_SCALES = 3                  # the filter runs at WORK_SIZE, /2, /4
GABOR_PLANES = 2                  # filtered planes: luminance and chroma (max - min over RGB)
GABOR_WAVELENGTH = 4.0            # pixels, at each scale
GABOR_SIGMA_PER_WAVELENGTH = 0.56  # about one octave of bandwidth
GABOR_HALF_WIDTH_SIGMAS = 2.5     # kernel half-width in units of sigma
LUMA = (0.299, 0.587, 0.114)
# Figure shape: the figure is what the smooth background does not explain. A colour plane
# (a + b x + c y per channel) is fitted to a frame of FIGURE_FRAME pixels along the border; the
# colour distance from it, blurred (FIGURE_BLUR_SIGMA pixels, closes gaps where a texture inside the
# figure crosses the background colour) and divided by its FIGURE_QUANTILE, is the figure's weight
# above FIGURE_FLOOR. Around the weight's centroid, in units of its RMS radius, the weight is
# sampled on SHAPE_RADII circles of SHAPE_ANGLES points; the magnitudes of the first
# SHAPE_HARMONICS angular Fourier coefficients per circle (free of position and rotation,
# normalised for size) and the RMS radius form the block.
FIGURE_FRAME = 3
FIGURE_BLUR_SIGMA = 1.0
FIGURE_QUANTILE = 0.98
FIGURE_FLOOR = 0.3
SHAPE_RADII = (0.2, 2.0, 8)       # first, last, count: circle radii in RMS radii of the figure
SHAPE_ANGLES = 64
SHAPE_HARMONICS = 9               # angular frequencies 0 .. 8 (3-, 4- and 5-fold symmetries among them)
EPS = 1e-6
PROJECTION_SEED = 20240411
DEFAULT_HANDCRAFTED_DIM = 256
# Bumped whenever the handcrafted features change: weights conditioned on or aligned to the
# features of another revision are refused (models/provenance.py).
HANDCRAFTED_REVISION = 2


def gabor_bank(orientations: int = GABOR_ORIENTATIONS, wavelength: float = GABOR_WAVELENGTH) -> torch.Tensor:
    """Quadrature Gabor pairs `[2 * orientations, 1, K, K]`: even (zero-mean) then odd per orientation."""
    sigma = GABOR_SIGMA_PER_WAVELENGTH * wavelength
    half = math.ceil(GABOR_HALF_WIDTH_SIGMAS * sigma)
    coords = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")                      # [K, K]
    envelope = torch.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
    kernels = []
    for k in range(orientations):
        theta = math.pi * k / orientations
        phase = 2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / wavelength
        even = envelope * torch.cos(phase)
        even = even - envelope * (even.sum() / envelope.sum())                  # no response to flat areas
        odd = envelope * torch.sin(phase)
        for kern in (even, odd):
            kernels.append(kern / kern.abs().sum())
    return torch.stack(kernels).unsqueeze(1).float()                            # [2*O, 1, K, K]


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of `[B, 1, S, S]` (zero padding), kernel half-width 3 sigma."""
    half = math.ceil(3 * sigma)
    taps = torch.exp(-torch.arange(-half, half + 1, dtype=x.dtype) ** 2 / (2 * sigma ** 2))
    taps = taps / taps.sum()
    x = F.conv2d(x, taps.view(1, 1, 1, -1), padding=(0, half))
    return F.conv2d(x, taps.view(1, 1, -1, 1), padding=(half, 0))


def figure_shape(x: torch.Tensor) -> torch.Tensor:
    """Figure-centred polar shape descriptor (see FIGURE_* / SHAPE_*): `[B, 3, S, S]` in [0, 1] ->
    `[B, SHAPE_RADII[2] * SHAPE_HARMONICS + 1]`."""
    b, _, size, _ = x.shape
    coords = (torch.arange(size, dtype=x.dtype) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")                       # [S, S] each, y down
    plane = torch.stack([torch.ones_like(xx), xx, yy], -1)                       # [S, S, 3]
    frame = torch.ones(size, size, dtype=torch.bool)
    frame[FIGURE_FRAME:-FIGURE_FRAME, FIGURE_FRAME:-FIGURE_FRAME] = False
    fit = torch.linalg.pinv(plane[frame])                                        # [3, P]
    coef = x[:, :, frame] @ fit.T                                                # [B, 3 channels, 3 terms]
    background = torch.einsum("bct,hwt->bchw", coef, plane)                      # [B, 3, S, S]
    residual = (x - background).pow(2).sum(1, keepdim=True).sqrt()               # [B, 1, S, S]
    residual = _gaussian_blur(residual, FIGURE_BLUR_SIGMA).flatten(1)            # [B, S*S]
    scale = torch.quantile(residual, FIGURE_QUANTILE, dim=1, keepdim=True).clamp_min(EPS)
    weight = ((residual / scale).clamp(0, 1) - FIGURE_FLOOR).clamp_min(0) / (1 - FIGURE_FLOOR)
    weight = weight.view(b, size, size)                                          # [B, S, S]
    mass = weight.sum((1, 2)).clamp_min(EPS)
    cx = (weight * xx).sum((1, 2)) / mass                                        # [B]
    cy = (weight * yy).sum((1, 2)) / mass
    rms = ((weight * ((xx - cx.view(-1, 1, 1)) ** 2 + (yy - cy.view(-1, 1, 1)) ** 2)).sum((1, 2))
           / mass).sqrt().clamp_min(EPS)                                         # [B]
    first, last, count = SHAPE_RADII
    radii = torch.linspace(first, last, count, dtype=x.dtype)                    # [R]
    angles = torch.arange(SHAPE_ANGLES, dtype=x.dtype) * (2 * math.pi / SHAPE_ANGLES)  # [A]
    reach = rms.view(-1, 1, 1) * radii.view(1, -1, 1)                            # [B, R, 1]
    grid = torch.stack([cx.view(-1, 1, 1) + reach * torch.cos(angles),
                        cy.view(-1, 1, 1) + reach * torch.sin(angles)], -1)      # [B, R, A, 2]
    circles = F.grid_sample(weight.unsqueeze(1), grid, align_corners=False).squeeze(1)  # [B, R, A]
    spectrum = torch.fft.rfft(circles, dim=-1).abs()[..., :SHAPE_HARMONICS] / SHAPE_ANGLES  # [B, R, H]
    return torch.cat([spectrum.flatten(1), rms.unsqueeze(1)], 1)                 # [B, R*H + 1]


class HandcraftedFeatures(ImageFeatureExtractor):
    """Deterministic, weight-free image features.

    Blocks (each scaled by 1/sqrt(its length) so that every block weighs about
    the same), in `BLOCKS` order: per-channel mean and std (6), joint colour histogram (64), mean
    colour on a 4x4 grid (48), Gabor energy of the luminance and chroma planes
    for 4 orientations x 3 scales on a 4x4 grid (384), figure shape (73, `figure_shape`). The 575 raw
    values are projected to `dim` with a fixed-seed Gaussian matrix (`dim=None` keeps them raw) and
    optionally L2-normalised. Each image's features depend on that image only.
    """

    name = "handcrafted"
    BLOCKS = {"moments": 2 * 3, "histogram": HIST_BINS ** 3, "layout": 3 * LAYOUT_GRID ** 2,
              "gabor": GABOR_PLANES * GABOR_ORIENTATIONS * GABOR_SCALES * GABOR_GRID ** 2,
              "shape": SHAPE_RADII[2] * SHAPE_HARMONICS + 1}

    @classmethod
    def block(cls, name: str) -> slice:
        """Columns of block `name` in `raw_features`."""
        names = list(cls.BLOCKS)
        start = sum(cls.BLOCKS[n] for n in names[:names.index(name)])
        return slice(start, start + cls.BLOCKS[name])

    def __init__(self, dim: Optional[int] = DEFAULT_HANDCRAFTED_DIM, normalize: bool = False):
        self.normalize = bool(normalize)
        self.bank = gabor_bank()
        self.raw_dim = sum(self.BLOCKS.values())
        if dim is None:
            self.projection = None
            self.dim = self.raw_dim
        else:
            if int(dim) < 1:
                raise ConfigError(describe("handcrafted dim", "a positive integer or None", dim))
            self.dim = int(dim)
            gen = torch.Generator().manual_seed(PROJECTION_SEED)
            self.projection = torch.randn(self.raw_dim, self.dim, generator=gen) / math.sqrt(self.dim)

    def raw_features(self, images: torch.Tensor) -> torch.Tensor:
        """`[B, 3, H, W]` in [0, 1] -> unprojected block features `[B, raw_dim]`."""
        x = F.interpolate(images, size=(WORK_SIZE, WORK_SIZE), mode="bilinear",
                          antialias=True, align_corners=False).clamp(0, 1)       # [B, 3, S, S]
        b = x.shape[0]
        pixels = x.flatten(2)                                                     # [B, 3, S*S]
        moments = torch.cat([pixels.mean(-1), pixels.std(-1, unbiased=False)], 1)  # [B, 6]
        bins = (x * HIST_BINS).long().clamp_(0, HIST_BINS - 1)                    # [B, 3, S, S]
        joint = (bins[:, 0] * HIST_BINS + bins[:, 1]) * HIST_BINS + bins[:, 2]    # [B, S, S]
        hist = F.one_hot(joint.flatten(1), HIST_BINS ** 3).float().mean(1)        # [B, 64]
        layout = F.adaptive_avg_pool2d(x, LAYOUT_GRID).flatten(1)                 # [B, 3*G*G]
        luma = (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)      # [B, 1, S, S]
        chroma = x.amax(1, keepdim=True) - x.amin(1, keepdim=True)                # [B, 1, S, S]
        planes = torch.cat([luma, chroma], 1)                                      # [B, P, S, S]
        bank = self.bank.repeat(GABOR_PLANES, 1, 1, 1)                             # [P*2*O, 1, K, K]
        energies = []
        for _ in range(GABOR_SCALES):
            resp = F.conv2d(planes, bank, padding=bank.shape[-1] // 2, groups=GABOR_PLANES)  # [B, P*2*O, s, s]
            resp = resp.view(b, GABOR_PLANES * GABOR_ORIENTATIONS, 2, *resp.shape[-2:])     # [B, P*O, 2, s, s]
            energy = resp.pow(2).sum(2).sqrt()                                     # [B, P*O, s, s]
            energies.append(F.adaptive_avg_pool2d(energy, GABOR_GRID).flatten(1))  # [B, P*O*G*G]
            planes = F.avg_pool2d(planes, 2)                                       # next scale
        gabor = torch.cat(energies, 1)                                             # [B, P*O*scales*G*G]
        blocks = [moments, hist, layout, gabor, figure_shape(x)]
        return torch.cat([blk / math.sqrt(blk.shape[1]) for blk in blocks], 1)     # [B, raw_dim]

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.raw_features(images.cpu())                                    # [B, raw_dim]
        if self.projection is not None:
            feats = feats @ self.projection                                        # [B, dim]
        if self.normalize:
            feats = _l2_normalize(feats)
        return feats.to(images.device)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "revision": HANDCRAFTED_REVISION, "dim": self.dim, "raw_dim": self.raw_dim,
                "projection_seed": PROJECTION_SEED if self.projection is not None else None,
                "normalize": self.normalize, "work_size": WORK_SIZE}


# ---------------------------------------------------------------------------
# open_clip image tower
# ---------------------------------------------------------------------------

# open_clip model name -> architecture of its image tower. The multilingual
# model's text tower needs HuggingFace downloads; its image tower is ViT-H-14.
IMAGE_TOWER_ARCH = {"xlm-roberta-large-ViT-H-14": "ViT-H-14"}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_IMAGE_SIZE = 224
OPEN_CLIP_VISUAL_PREFIX = "visual."


def clip_preprocess(images: torch.Tensor, size: int = CLIP_IMAGE_SIZE) -> torch.Tensor:
    """open_clip's eval transform on tensors: bicubic resize of the shorter side to `size`,
    centre crop `size` x `size`, CLIP mean/std normalisation. `[B, 3, H, W]` -> `[B, 3, size, size]`."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(images, size=(new_h, new_w), mode="bicubic", antialias=True,
                      align_corners=False).clamp(0, 1)                              # [B, 3, h', w']
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[..., top:top + size, left:left + size]                                     # [B, 3, size, size]
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _open_clip_help(model: str, pretrained: str) -> str:
    return (f"to use the open_clip backend: (1) pip install open_clip_torch; (2) download the {model} "
            f"'{pretrained}' checkpoint file (open_clip_pytorch_model.bin or open_clip_model.safetensors "
            f"from its HuggingFace model page); (3) pass its path with --set Features.weights=/path/to/file")


class OpenClipFeatures(ImageFeatureExtractor):
    """CLIP image features from open_clip, weights from a local file only.

    The architecture is built with `open_clip.create_model(arch, pretrained=None)`
    (no download); the `visual.*` entries of the weights file are read with
    `torch.load(weights_only=True)` (or safetensors) and loaded strictly into the
    image tower. `pretrained` is recorded for provenance only.
    """

    name = "open_clip"

    def __init__(self, model: str = "xlm-roberta-large-ViT-H-14", pretrained: str = "frozen_laion5b_s13b_b90k",
                 weights: Optional[str] = None, normalize: bool = True, dim: Optional[int] = None,
                 device: str = "cpu"):
        self.model_name, self.pretrained = model, pretrained
        self.normalize = bool(normalize)
        self.arch = IMAGE_TOWER_ARCH.get(model, model)
        try:
            import open_clip
        except ImportError as err:
            raise LEAError(f"open_clip is not installed; {_open_clip_help(model, pretrained)}") from err
        if weights is None:
            raise LEAError(f"no weights file given for open_clip {model}; {_open_clip_help(model, pretrained)}")
        self.weights = Path(weights)
        if not self.weights.is_file():
            raise LEAError(f"{self.weights}: open_clip weights file not found; {_open_clip_help(model, pretrained)}")

        visual = open_clip.create_model(self.arch, pretrained=None).visual
        state = extract_state_dict(safe_torch_load(self.weights), self.weights, wrappers=("state_dict", "model"))
        if any(k.startswith(OPEN_CLIP_VISUAL_PREFIX) for k in state):
            state = {k[len(OPEN_CLIP_VISUAL_PREFIX):]: v for k, v in state.items()
                     if k.startswith(OPEN_CLIP_VISUAL_PREFIX)}
        load_state_dict_strict(visual, state, self.weights)
        self.visual = visual.eval().to(device)
        self.device = torch.device(device)
        self.dim = int(getattr(visual, "output_dim", dim or 0))
        if dim is not None and int(dim) != self.dim:
            raise ConfigError(describe("Features.dim", f"{self.dim} (output of the {self.arch} image tower)", dim))
        image_size = getattr(visual, "image_size", CLIP_IMAGE_SIZE)
        self.image_size = int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size)

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        pixels = clip_preprocess(images.to(self.device), self.image_size)          # [B, 3, 224, 224]
        feats = self.visual(pixels).float()                                        # [B, dim]
        if self.normalize:
            feats = _l2_normalize(feats)
        return feats.to(images.device)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model_name, "image_tower_arch": self.arch,
                "pretrained": self.pretrained, "weights": str(self.weights),
                "weights_bytes": self.weights.stat().st_size, "dim": self.dim,
                "normalize": self.normalize, "image_size": self.image_size}


# ---------------------------------------------------------------------------
# Factory and cache
# ---------------------------------------------------------------------------

BACKENDS: dict[str, type[ImageFeatureExtractor]] = {
    "handcrafted": HandcraftedFeatures,
    "open_clip": OpenClipFeatures,
}


def build_image_features(name: str, **options: Any) -> ImageFeatureExtractor:
    """Build the backend `name` ('handcrafted' | 'open_clip') with its keyword options."""
    if name not in BACKENDS:
        raise ConfigError(describe("Features.backend", f"one of {sorted(BACKENDS)}", repr(name)))
    cls = BACKENDS[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(describe(f"options of image-feature backend '{name}'",
                                   f"a subset of {sorted(accepted)}", unknown))
    return cls(**options)


def build_image_features_from_config(cfg: Any) -> ImageFeatureExtractor:
    """Build from a FeatureConfig-like object (backend, dim, normalize, model, pretrained, weights)."""
    if cfg.backend == "open_clip":
        return build_image_features("open_clip", model=cfg.model, pretrained=cfg.pretrained,
                                    weights=cfg.weights, normalize=cfg.normalize, dim=cfg.dim)
    return build_image_features(cfg.backend, dim=cfg.dim, normalize=cfg.normalize)


CACHE_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")
CACHE_HASH_CHARS = 16
DEFAULT_BATCH_SIZE = 32


def features_digest(extractor: ImageFeatureExtractor, images: np.ndarray) -> str:
    """sha256 over the images' shape, dtype and bytes and the extractor's description."""
    h = hashlib.sha256()
    h.update(f"{images.shape}|{images.dtype}|".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(json.dumps(extractor.describe(), sort_keys=True).encode())
    return h.hexdigest()


def cached_features(extractor: ImageFeatureExtractor, images_uint8: np.ndarray | torch.Tensor,
                    cache_dir: str | Path, key: str, batch_size: int = DEFAULT_BATCH_SIZE,
                    progress: bool = True) -> torch.Tensor:
    """Features `[N, dim]` (float32, CPU) of uint8 RGB images `[N, H, W, 3]`, cached on disk.

    The cache file is `<cache_dir>/<key>_<hash>.npy`; the hash covers the image
    bytes and `extractor.describe()`, so changed images or options never reuse
    stale features. Writes are atomic.
    """
    images = images_uint8.cpu().numpy() if isinstance(images_uint8, torch.Tensor) else np.asarray(images_uint8)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(describe(f"images for feature cache '{key}'", "uint8 array [N, H, W, 3]",
                                 f"{images.dtype} array of shape {list(images.shape)}"))
    if not CACHE_KEY_PATTERN.match(key):
        raise ConfigError(describe("feature cache key", "letters, digits, '_', '.', '-'", repr(key)))
    path = Path(cache_dir) / f"{key}_{features_digest(extractor, images)[:CACHE_HASH_CHARS]}.npy"
    n = images.shape[0]
    cached = read_cache(path, f"cached {extractor.name} features", shape=(n, extractor.dim))
    if cached is not None:
        return torch.from_numpy(cached)
    feats = features_of(extractor, images, batch_size, desc=f"{extractor.name} features ({key})",
                        progress=progress)
    atomic_save_npy(path, feats.numpy())
    return feats


def features_of(extractor: ImageFeatureExtractor, images: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE,
                desc: str = "image features", progress: bool = False) -> torch.Tensor:
    """Features `[N, dim]` (float32, CPU) of uint8 RGB images `[N, H, W, 3]`, in batches, in memory."""
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
        batch = batch.permute(0, 3, 1, 2)                                # [b, 3, H, W]
        chunks.append(extractor(batch.float() / 255.0).float().cpu())    # [b, dim]
    return torch.cat(chunks) if chunks else torch.zeros(0, extractor.dim)
