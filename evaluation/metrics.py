"""Decoding and encoding metrics of the paper and MinD-Vis (spec §5).

Every metric is returned as a `Metric` with its chance level. A metric that
cannot be computed here (no classifier weights, no LPIPS network, no FID feature
extractor) is returned with `value=None` and the reason in `skipped`; no number
is ever made up.

Conventions
- Ground-truth images: uint8 `[N, H, W, 3]` (channel last) or float `[N, 3, H, W]`
  in [0, 1] (channel first); numpy arrays or torch tensors.
- Reconstructions: the same forms with a sample axis, `[N, S, ...]`; without it
  (`[N, ...]`) there is one sample per image.
- Pixel metrics (MSE, PCC, SSIM) work on pixel values 0..255 (float images are
  multiplied by 255, not rounded), as MinD-Vis does.
- Identification scores are held as `scores[i, s, j]`: how sample s of item i
  scores against candidate j. Item i is identified against candidate j != i when
  its own candidate scores strictly better; ties count as failures.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from utils.errors import ConfigError, DataError, describe
from utils.io import atomic_write_json, atomic_write_text

PIXEL_MAX = 255.0
CHANNELS = 3
SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_COV_NORM = SSIM_WINDOW ** 2 / (SSIM_WINDOW ** 2 - 1)  # sample (not population) covariance
PAIRWISE_CHANCE = 0.5
DEFAULT_N_WAY = 50
DEFAULT_TRIALS = 1000
DEFAULT_SEED = 0
SSIM_PAIR_ELEMENTS = 1 << 23  # pixels per batched SSIM step (64 MB per float64 buffer)
FLOAT_RANGE_TOL = 1e-6
CSV_FIELDS = ("name", "value", "chance", "skipped", "ci_low", "ci_high", "p_value", "sd_over_samples")
CI_KEY = "ci95"  # details key: [low, high] bootstrap interval
NO_INTERVAL = "ci_skipped"  # details key: why a metric has no bootstrap interval
STIMULI_CEILING = "stimuli_ceiling"  # details key: the metric's value on the true test stimuli (its ceiling)

ArrayLike = np.ndarray | torch.Tensor


@dataclass
class Metric:
    """One reported number with its chance level; `value is None` iff `skipped` gives the reason."""

    name: str
    value: float | None
    chance: float | None
    skipped: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.value is None) == (self.skipped is None):
            raise ValueError(f"metric {self.name!r}: give exactly one of a value or a skipped reason")
        if self.value is not None:
            self.value = float(self.value)
            if not math.isfinite(self.value):
                raise ValueError(f"metric {self.name!r}: value {self.value} is not finite; skip it with a reason")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "chance": self.chance,
                "skipped": self.skipped, "details": self.details}


def skipped(name: str, reason: str, chance: float | None = None) -> Metric:
    """A metric that was not computed, with the reason."""
    return Metric(name=name, value=None, chance=chance, skipped=reason)


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ----------------------------------------------------------------------------- image inputs

def as_pixels(images: ArrayLike, where: str = "images") -> np.ndarray:
    """uint8 `[..., H, W, 3]` or float `[..., 3, H, W]` in [0, 1] -> float64 `[..., H, W, 3]` in 0..255."""
    x = _numpy(images)
    if x.dtype == np.uint8:
        if x.ndim < 3 or x.shape[-1] != CHANNELS:
            raise DataError(describe(where, "uint8 images [..., H, W, 3]", f"shape {x.shape}"))
        return x.astype(np.float64)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(describe(where, "uint8 [..., H, W, 3] or float [..., 3, H, W] images", f"dtype {x.dtype}"))
    if x.ndim < 3 or x.shape[-3] != CHANNELS:
        raise DataError(describe(where, "float images [..., 3, H, W] in [0, 1]", f"shape {x.shape}"))
    lo, hi = float(x.min()), float(x.max())
    if lo < -FLOAT_RANGE_TOL or hi > 1 + FLOAT_RANGE_TOL or not np.isfinite([lo, hi]).all():
        raise DataError(describe(where, "float images with values in [0, 1]", f"range [{lo}, {hi}]"))
    return np.moveaxis(x.astype(np.float64), -3, -1) * PIXEL_MAX  # [..., H, W, 3]


def resize_images(images: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, size[0], size[1], 3] (bicubic); unchanged when already that size.
    The evaluation's resize of ground truth and retrieved images to the decoded resolution; what the
    tokenizer is given is resized by models/vqgan.py `tokenizer_input`."""
    if images.shape[1:3] == tuple(size):
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((size[1], size[0]), Image.Resampling.BICUBIC))
                     for im in images])


def _paired_images(gt: ArrayLike, recon: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """-> gt `[N, H, W, 3]`, recon `[N, S, H, W, 3]`, both float64 pixels 0..255."""
    g = as_pixels(gt, "ground-truth images")
    r = as_pixels(recon, "reconstructions")
    if g.ndim != 4:
        raise DataError(describe("ground-truth images", "a batch [N, H, W, 3] or [N, 3, H, W]", f"shape {g.shape}"))
    if r.ndim == 4:
        r = r[:, None]  # [N, 1, H, W, 3]
    if r.ndim != 5 or r.shape[0] != g.shape[0] or r.shape[2:] != g.shape[1:]:
        raise DataError(describe("reconstructions", f"[N, S, ...] images matching the ground truth "
                                 f"(N={g.shape[0]}, image {g.shape[1:]} as H, W, 3)", f"{r.shape} as N, S, H, W, 3"))
    if g.shape[0] < 2:
        raise DataError(describe("ground-truth images", "at least 2 images to identify among", g.shape[0]))
    return g, r


def _paired_features(gt: ArrayLike, recon: ArrayLike, where: str) -> tuple[np.ndarray, np.ndarray]:
    """-> gt `[N, D]`, recon `[N, S, D]` float64."""
    g = _numpy(gt).astype(np.float64)
    r = _numpy(recon).astype(np.float64)
    if r.ndim == 2:
        r = r[:, None]  # [N, 1, D]
    if g.ndim != 2 or r.ndim != 3 or r.shape[0] != g.shape[0] or r.shape[2] != g.shape[1]:
        raise DataError(describe(where, "targets [N, D] and predictions [N, D] or [N, S, D]",
                                 f"{g.shape} and {r.shape}"))
    if g.shape[0] < 2:
        raise DataError(describe(where, "at least 2 items to identify among", g.shape[0]))
    return g, r


# ----------------------------------------------------------------------------- identification core

def _own_scores(scores: np.ndarray) -> np.ndarray:
    """`scores [N, S, N]` -> each item's score against its own candidate, `[N, S, 1]`."""
    n = scores.shape[0]
    return scores[np.arange(n), :, np.arange(n)][:, :, None]


def _wins(scores: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """`scores [N, S, K]` -> `[N, S]`: how many other candidates each item's own candidate beats strictly."""
    own = _own_scores(scores)
    wins = scores < own if higher_is_better else scores > own  # [N, S, K]; the own entry is never a win
    return wins.sum(-1)


def pairwise_rates(scores: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """`scores [N, S, N]` -> `[N, S]`: fraction of the N-1 other candidates its own beats strictly."""
    return _wins(scores, higher_is_better) / (scores.shape[-1] - 1)


def _rivals(scores: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """`scores [N, S, N]` -> `[N, S]`: how many other candidates do not lose to the own one."""
    return scores.shape[-1] - 1 - _wins(scores, higher_is_better)


def rival_counts(scores: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """`scores [N, S, N]` -> `[N, S]`: how many other candidates do not lose to each item's own one."""
    return _rivals(scores, higher_is_better)


def n_way_success(rivals: np.ndarray, pool: int, n: int, trials: int,
                  seed: int | np.random.Generator = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """n-way top-1 from rival counts: Monte-Carlo rate per item and its exact expectation.

    For an item with `m = rivals` of the `pool` distractors not losing to its own
    candidate, a trial draws n-1 distractors without replacement and succeeds when
    none of them is a rival. The number of rivals drawn is hypergeometric, so
    each trial draws that number (identical in law to drawing the classes
    themselves). The exact success probability is C(pool-m, n-1) / C(pool, n-1).
    Returns `(rate, exact)`, both shaped like `rivals`.
    """
    if not 2 <= n <= pool + 1:
        raise ConfigError(describe("n-way", f"an n in [2, {pool + 1}] (1 + distractors available)", n))
    if trials < 1:
        raise ConfigError(describe("n-way trials", "a positive number of trials", trials))
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    m = rivals.astype(np.int64)
    drawn = rng.hypergeometric(m[..., None], pool - m[..., None], n - 1, size=m.shape + (trials,))
    rate = (drawn == 0).mean(-1)
    k = np.arange(n - 1)  # exact: prod_k (pool - m - k) / (pool - k)
    exact = np.clip((pool - m[..., None] - k) / (pool - k), 0.0, None).prod(-1)
    return rate, exact


def _rate_metric(name: str, rates: np.ndarray, chance: float, **details: Any) -> Metric:
    """Average `rates [N, S]` over samples and images into one Metric."""
    per_image = rates.mean(axis=1)
    per_sample = rates.mean(axis=0)  # [S]: the metric of each sample index over all images
    return Metric(name=name, value=float(per_image.mean()), chance=chance,
                  details={"n_images": int(rates.shape[0]), "n_samples": int(rates.shape[1]),
                           "std_over_images": float(per_image.std()), "per_image": per_image.tolist(),
                           "per_sample": per_sample.tolist(), "sd_over_samples": float(per_sample.std(ddof=0)),
                           **details})


def best_sample(metric: Metric) -> Metric:
    """The best sample index of a per-sample metric: max over sample indices of its mean over images.

    MinD-Vis's "top-1-class (max)". Skipped when `metric` is skipped or has one sample.
    """
    name = f"{metric.name}_best_sample"
    per_sample = metric.details.get("per_sample", [])
    if metric.value is None or len(per_sample) < 2:
        return skipped(name, metric.skipped or "needs at least 2 samples per image", metric.chance)
    best = int(np.argmax(per_sample))
    return Metric(name, float(per_sample[best]), metric.chance,
                  details={"sample_index": best, "per_sample": list(per_sample),
                           NO_INTERVAL: "a maximum over sample indices has no per-image decomposition"})


def _n_way_metric(name: str, rivals: np.ndarray, pool: int, n: int, trials: int,
                  seed: int | np.random.Generator) -> Metric:
    rate, exact = n_way_success(rivals, pool, n, trials, seed)
    return _rate_metric(name, rate, 1.0 / n, n_way=n, trials=trials, exact_expectation=float(exact.mean()))


# ----------------------------------------------------------------------------- pixel scores

def _sum_sq_diff(gt: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """`[N, D]`, `[N, S, D]` -> `[N, S, N]` sums of squared differences, by |r|^2 - 2 r.g + |g|^2.

    Exact for integer pixel values (every partial sum is an integer below 2^53).
    """
    ssd = (np.einsum("nsd,nsd->ns", recon, recon)[..., None] - 2.0 * _similarity(gt, recon)
           + np.einsum("nd,nd->n", gt, gt))  # [N, S, N]
    return np.maximum(ssd, 0.0)


def unit_rows(x: np.ndarray, centre: bool) -> np.ndarray:
    """L2-normalise the last axis (after centring when `centre`); zero-norm rows become nan."""
    if centre:
        x = x - x.mean(-1, keepdims=True)
    norm = np.sqrt(np.einsum("...d,...d->...", x, x))[..., None]
    return x / np.where(norm > 0, norm, np.nan)


def _similarity(gt: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Dot products of unit rows: `[N, D]`, `[N, S, D]` -> `[N, S, N]`, as one 2-D product (BLAS)."""
    n, s, d = recon.shape
    return (recon.reshape(n * s, d) @ gt.T).reshape(n, s, gt.shape[0])


def _pearson_scores(gt: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """`[N, D]`, `[N, S, D]` -> `[N, S, N]` Pearson correlations (nan for a constant vector)."""
    return _similarity(unit_rows(gt, centre=True), unit_rows(recon, centre=True))


def _cosine_scores(gt: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """`[N, D]`, `[N, S, D]` -> `[N, S, N]` cosine similarities (nan for a zero vector)."""
    return _similarity(unit_rows(gt, centre=False), unit_rows(recon, centre=False))


def _box_mean_valid(x: torch.Tensor) -> torch.Tensor:
    """Mean over every 7x7 window that fits: `[B, C, H, W]` -> `[B, C, H-6, W-6]`."""
    b, c, h, w = x.shape
    out = F.avg_pool2d(x.reshape(b * c, 1, h, w), SSIM_WINDOW, stride=1)
    return out.reshape(b, c, h - SSIM_WINDOW + 1, w - SSIM_WINDOW + 1)


def _ssim_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B, C, H, W]` -> local means and sample variances over the valid windows."""
    mu = _box_mean_valid(x)
    return mu, SSIM_COV_NORM * (_box_mean_valid(x * x) - mu * mu)


def _ssim_matrix(g: np.ndarray, r: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """Pixels gt `[N, H, W, 3]`, recon `[M, H, W, 3]` (0..255) -> SSIM of every pair `[M, N]` (float64)."""
    n, (m, h, w, _) = g.shape[0], r.shape
    if min(h, w) < SSIM_WINDOW:
        raise DataError(describe("SSIM images", f"at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels", f"{h}x{w}"))
    c1 = (SSIM_K1 * PIXEL_MAX) ** 2
    c2 = (SSIM_K2 * PIXEL_MAX) ** 2
    g_t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(g, -1, 1))).to(device)  # [N, 3, H, W]
    r_t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(r, -1, 1))).to(device)  # [M, 3, H, W]
    mu_g, var_g = _ssim_moments(g_t)  # [N, 3, h', w']
    lum_g, con_g = mu_g * mu_g + c1, var_g + c2
    # SSIM = a1 * a2 / den with a1 = 2 mu_x mu_g + C1, a2 = 2 cn (box(x g) - mu_x mu_g) + C2,
    # den = (mu_x^2 + mu_g^2 + C1)(var_x + var_g + C2). As mu_x mu_g = (a1 - C1) / 2,
    # a2 = 2 cn (box(x g) - a1 / 2 + offset): fewer passes over the pair buffers.
    offset = c1 / 2 + c2 / (2 * SSIM_COV_NORM)
    chunk = max(1, SSIM_PAIR_ELEMENTS // (CHANNELS * h * w))
    out = np.empty((m, n))
    for k in range(m):
        x = r_t[k:k + 1]  # [1, 3, H, W]
        mu_x, var_x = _ssim_moments(x)  # [1, 3, h', w']
        two_mu_x, lum_x = 2.0 * mu_x, mu_x * mu_x
        for j0 in range(0, n, chunk):
            sl = slice(j0, j0 + chunk)
            a1 = (mu_g[sl] * two_mu_x).add_(c1)  # [b, 3, h', w']
            a2_half = _box_mean_valid(x * g_t[sl]).add_(a1, alpha=-0.5).add_(offset)
            den = (lum_g[sl] + lum_x).mul_(con_g[sl] + var_x)
            ssim_map = a1.mul_(a2_half).div_(den)
            out[k, sl] = (2 * SSIM_COV_NORM) * ssim_map.mean(dim=(1, 2, 3)).cpu().numpy()
    return out


def ssim_scores(gt: ArrayLike, recon: ArrayLike, device: str | torch.device = "cpu") -> np.ndarray:
    """SSIM of every reconstruction against every ground truth: `[N, S, N]`.

    Matches `skimage.metrics.structural_similarity(r, g, data_range=255,
    channel_axis=-1)` with its defaults: 7x7 uniform window, K1 0.01, K2 0.03,
    sample covariance (49/48), mean SSIM over the region 3 pixels away from the
    border, averaged over channels. That cropped region only ever sees windows
    lying inside the image, so the boundary mode of the uniform filter does not
    matter and the windows are taken in 'valid' mode.

    Cost: one 7x7 box filter of r*g and about ten element-wise passes per pair,
    N*N*S pairs, about 5-10 ms per pair at 256 px on 2 CPU cores: 50*50*5 =
    12 500 pairs take 1-2 minutes, 113*113*5 = 63 845 pairs 5-10 minutes.
    Local means and variances are computed once per image. `device` may be a
    GPU; the arithmetic stays float64 there too.
    """
    g, r = _paired_images(gt, recon)
    n, s = r.shape[:2]
    return _ssim_matrix(g, r.reshape(n * s, *r.shape[2:]), device).reshape(n, s, n)


def ssim(a: ArrayLike, b: ArrayLike) -> float:
    """SSIM of one image pair, same conventions as `ssim_scores` (symmetric in a and b)."""
    x, y = as_pixels(a, "SSIM image a"), as_pixels(b, "SSIM image b")
    if x.ndim != 3 or x.shape != y.shape:
        raise DataError(describe("SSIM images", "two images [H, W, 3] or [3, H, W] of one shape",
                                 f"{x.shape} and {y.shape}"))
    return float(_ssim_matrix(y[None], x[None])[0, 0])


def _snr_scores(gt: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """`[N, D]`, `[N, S, D]` -> `[N, S, N]` SNR in dB of each reconstruction against each candidate.

    10 log10(|g_j|^2 / |r - g_j|^2), the release's `snr` metric (higher is better;
    +inf for an exact match).
    """
    energy = np.einsum("nd,nd->n", gt, gt)  # [N]
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(energy / _sum_sq_diff(gt, recon))


IMAGE_SCORES: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], bool]] = {
    # name -> (scores from flattened gt [N, D] and recon [N, S, D], higher is better)
    "mse": (_sum_sq_diff, False),
    "pcc": (_pearson_scores, True),
    "snr": (_snr_scores, True),
}


def pairwise_identification(gt: ArrayLike, recon: ArrayLike, score: str = "mse",
                            device: str | torch.device = "cpu") -> Metric:
    """Pair-wise identification with a pixel score ('mse', 'pcc', 'ssim' or 'snr'); chance 0.5.

    For each reconstruction, the fraction of the other ground-truth images that
    score worse against it than its own ground truth (lower MSE, higher PCC or
    SSIM is better), averaged over samples and images. `device` is used by SSIM.
    """
    if score == "ssim":
        return _rate_metric("pairwise_ssim", pairwise_rates(ssim_scores(gt, recon, device), True), PAIRWISE_CHANCE)
    if score not in IMAGE_SCORES:
        raise ConfigError(describe("pairwise_identification score", "one of mse, pcc, ssim, snr", repr(score)))
    g, r = _paired_images(gt, recon)
    fn, higher = IMAGE_SCORES[score]
    scores = fn(g.reshape(g.shape[0], -1), r.reshape(r.shape[0], r.shape[1], -1))  # [N, S, N]
    return _rate_metric(f"pairwise_{score}", pairwise_rates(scores, higher), PAIRWISE_CHANCE)


# ----------------------------------------------------------------------------- n-way semantic accuracy

def n_way_top1(gt: ArrayLike, recon_probs: ArrayLike, n: int = DEFAULT_N_WAY, trials: int = DEFAULT_TRIALS,
               seed: int | np.random.Generator = DEFAULT_SEED, name: str | None = None) -> Metric:
    """n-way top-1 accuracy from class probabilities; chance 1/n.

    gt: the ground truth's class `[N]` (int) or its probabilities `[N, C]` (the
    class is the arg-max). recon_probs: `[N, S, C]` or `[N, C]`. For each
    reconstruction and trial, n-1 classes other than the true class c are drawn
    without replacement; success when c has the highest probability of the n
    (a tie counts as a failure). Averaged over trials, samples and images;
    `details['exact_expectation']` is the same average over all possible draws.
    """
    g = _numpy(gt)
    p = _numpy(recon_probs).astype(np.float64)
    if p.ndim == 2:
        p = p[:, None]  # [N, 1, C]
    if g.ndim == 2:
        g = g.argmax(-1)
    if g.ndim != 1 or not np.issubdtype(g.dtype, np.integer) or p.ndim != 3 or p.shape[0] != g.shape[0]:
        raise DataError(describe("n_way_top1 inputs", "classes [N] (int) or probabilities [N, C], "
                                 "with reconstruction probabilities [N, S, C]", f"{g.shape} {g.dtype} and {p.shape}"))
    n_classes = p.shape[-1]
    if g.min() < 0 or g.max() >= n_classes:
        raise DataError(describe("n_way_top1 classes", f"values in [0, {n_classes})", f"[{g.min()}, {g.max()}]"))
    own = np.take_along_axis(p, g[:, None, None].repeat(p.shape[1], 1), axis=-1)  # [N, S, 1]
    rivals = (p >= own).sum(-1) - 1  # [N, S]: other classes not below the true one
    metric = _n_way_metric(name or f"{n}way_top1", rivals, n_classes - 1, n, trials, seed)
    metric.details["gt_classes"] = g.tolist()
    return metric


def classifier_n_way(gt_images: ArrayLike, recon_images: ArrayLike,
                     classifier: Callable[[torch.Tensor], torch.Tensor] | None, skip_reason: str | None = None,
                     n: int = DEFAULT_N_WAY, trials: int = DEFAULT_TRIALS,
                     seed: int | np.random.Generator = DEFAULT_SEED) -> Metric:
    """n-way top-1 with an ImageNet classifier (spec §5): labels from the ground truth, probabilities of each sample.

    classifier: float images `[B, 3, H, W]` in [0, 1] -> probabilities `[B, C]`
    (e.g. `evaluation.classifier.ImageNetClassifier`). Without one the metric is
    returned skipped with `skip_reason`.
    """
    name = f"classifier_{n}way_top1"
    if classifier is None:
        return skipped(name, skip_reason or "no ImageNet classifier given", chance=1.0 / n)
    g, r = _paired_images(gt_images, recon_images)
    n_img, s = r.shape[:2]

    def probs(pixels: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(np.moveaxis(pixels / PIXEL_MAX, -1, 1)).float()  # [B, 3, H, W]
        with torch.no_grad():
            return _numpy(classifier(images)).astype(np.float64)  # [B, C]

    recon_probs = probs(r.reshape(n_img * s, *r.shape[2:])).reshape(n_img, s, -1)  # [N, S, C]
    return n_way_top1(probs(g), recon_probs, n=n, trials=trials, seed=seed, name=name)


# ----------------------------------------------------------------------------- feature spaces

FEATURE_SCORES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    # name -> similarity (higher is better) from targets [N, D] and predictions [N, S, D]
    "pcc": _pearson_scores,
    "cosine": _cosine_scores,
}


def feature_scores(gt_feats: ArrayLike, recon_feats: ArrayLike, metric: str = "pcc") -> np.ndarray:
    """Similarity of every prediction `[N, S, D]` with every target `[N, D]`: `[N, S, N]`."""
    if metric not in FEATURE_SCORES:
        raise ConfigError(describe("feature metric", f"one of {', '.join(FEATURE_SCORES)}", repr(metric)))
    g, r = _paired_features(gt_feats, recon_feats, f"{metric} features")
    return FEATURE_SCORES[metric](g, r)


def feature_identification(gt_feats: ArrayLike, recon_feats: ArrayLike, metric: str = "pcc",
                           name: str | None = None) -> Metric:
    """Pair-wise identification in a feature space (e.g. CLIP); chance 0.5."""
    rates = pairwise_rates(feature_scores(gt_feats, recon_feats, metric), higher_is_better=True)
    return _rate_metric(name or f"feature_pairwise_{metric}", rates, PAIRWISE_CHANCE)


def feature_n_way_top1(gt_feats: ArrayLike, recon_feats: ArrayLike, n: int, metric: str = "pcc",
                       trials: int = DEFAULT_TRIALS, seed: int | np.random.Generator = DEFAULT_SEED,
                       name: str | None = None) -> Metric:
    """n-way top-1 identification among the N targets: own target vs n-1 random others; chance 1/n."""
    scores = feature_scores(gt_feats, recon_feats, metric)
    rivals = _rivals(scores, higher_is_better=True)
    return _n_way_metric(name or f"feature_{n}way_top1_{metric}", rivals, scores.shape[0] - 1, n, trials, seed)


# ----------------------------------------------------------------------------- networks not shipped here

LPIPS_REASON = ("LPIPS (AlexNet) needs the lpips package with its AlexNet and linear-layer weights, "
                "which are not available offline; pass a distance function to compute it")
FID_REASON = ("FID needs the Inception-v3 FID feature extractor and its weights (torchmetrics, feature 64), "
              "which are not available offline; pass a feature function to compute it")


def lpips_identification(gt: ArrayLike, recon: ArrayLike,
                         distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> Metric:
    """Pair-wise identification with a perceptual distance (PSM, lower is better); chance 0.5.

    distance(a, b): two float image batches `[B, 3, H, W]` in [0, 1] -> `[B]`
    (e.g. a wrapper around `lpips.LPIPS(net='alex')` that rescales to [-1, 1]).
    Without it the metric is returned skipped.
    """
    if distance is None:
        return skipped("pairwise_lpips", LPIPS_REASON, chance=PAIRWISE_CHANCE)
    g, r = _paired_images(gt, recon)
    n, s = r.shape[:2]
    g_t = torch.from_numpy(np.moveaxis(g / PIXEL_MAX, -1, 1)).float()  # [N, 3, H, W]
    r_t = torch.from_numpy(np.moveaxis(r / PIXEL_MAX, -1, 2)).float()  # [N, S, 3, H, W]
    scores = np.empty((n, s, n))
    with torch.no_grad():
        for i in range(n):
            for k in range(s):
                d = distance(r_t[i, k].expand_as(g_t), g_t)  # [N]
                scores[i, k] = _numpy(d).reshape(n)
    return _rate_metric("pairwise_lpips", pairwise_rates(scores, higher_is_better=False), PAIRWISE_CHANCE)


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to `[N, D]` and `[M, D]` features (unbiased covariances).

    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).
    """
    from scipy import linalg

    a, b = _numpy(feats_a).astype(np.float64), _numpy(feats_b).astype(np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise DataError(describe("Fréchet distance features", "[N, D] and [M, D] with N, M >= 2",
                                 f"{a.shape} and {b.shape}"))
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b).real
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def fid(gt: ArrayLike, recon: ArrayLike,
        features: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Metric:
    """FID between all reconstructions and the ground truths (lower is better; no chance level).

    features: float images `[B, 3, H, W]` in [0, 1] -> `[B, D]` (the paper uses
    Inception-v3 at feature 64). Without it the metric is returned skipped.
    """
    if features is None:
        return skipped("fid", FID_REASON)
    g, r = _paired_images(gt, recon)
    with torch.no_grad():
        fg = _numpy(features(torch.from_numpy(np.moveaxis(g / PIXEL_MAX, -1, 1)).float()))
        fr = _numpy(features(torch.from_numpy(np.moveaxis(r.reshape(-1, *r.shape[2:]) / PIXEL_MAX, -1, 1)).float()))
    return Metric("fid", frechet_distance(fr, fg), None, details={"n_gt": len(fg), "n_recon": len(fr)})


# ----------------------------------------------------------------------------- encoding metrics

def _paired_fmri(measured: ArrayLike, predicted: ArrayLike, where: str = "fMRI") -> tuple[np.ndarray, np.ndarray]:
    m, p = _numpy(measured).astype(np.float64), _numpy(predicted).astype(np.float64)
    if m.ndim != 2 or m.shape != p.shape:
        raise DataError(describe(where, "measured and predicted arrays [N, V] of one shape",
                                 f"{m.shape} and {p.shape}"))
    return m, p


def voxelwise_pearson(measured: ArrayLike, predicted: ArrayLike) -> np.ndarray:
    """Pearson r across the N test images for each voxel: `[N, V]` x2 -> `[V]`.

    A voxel that is constant over the images in either array has no correlation
    and gets nan (count them with `np.isnan`).
    """
    m, p = _paired_fmri(measured, predicted)
    constant = (np.ptp(m, axis=0) == 0) | (np.ptp(p, axis=0) == 0)  # [V]
    mc, pc = m - m.mean(0), p - p.mean(0)
    denom = np.sqrt((mc ** 2).sum(0) * (pc ** 2).sum(0))
    r = (mc * pc).sum(0) / np.where(constant, 1.0, denom)
    return np.where(constant, np.nan, r)


def roi_slices(roi_patch: Sequence[int] | None, roi_names: Sequence[str] | None, n_voxels: int
               ) -> list[tuple[str, slice]]:
    """Consecutive voxel groups of sizes `roi_patch` named `roi_names`; [] when neither is given."""
    if roi_patch is None and roi_names is None:
        return []
    if roi_patch is None or roi_names is None or len(roi_patch) != len(roi_names):
        raise ConfigError(describe("roi_patch / roi_names", "two lists of one length",
                                   f"{roi_patch!r} and {roi_names!r}"))
    if sum(roi_patch) != n_voxels or min(roi_patch) < 1:
        raise ConfigError(describe("roi_patch", f"positive group sizes summing to the {n_voxels} voxels",
                                   f"{list(roi_patch)} (sum {sum(roi_patch)})"))
    ends = np.cumsum(roi_patch)
    return [(name, slice(int(e - k), int(e))) for name, k, e in zip(roi_names, roi_patch, ends)]


def _voxel_summary(name: str, per_voxel: np.ndarray, chance: float | None, roi_patch: Sequence[int] | None,
                   roi_names: Sequence[str] | None, median: bool) -> list[Metric]:
    """Mean (and median) of a per-voxel quantity over all voxels and per ROI, ignoring nan voxels."""
    groups = [("", slice(None))] + [(f"_{roi}", sl) for roi, sl in roi_slices(roi_patch, roi_names, len(per_voxel))]
    stats = [("_mean", np.mean)] + ([("_median", np.median)] if median else [])
    out = []
    for suffix, sl in groups:
        values = per_voxel[sl]
        valid = values[np.isfinite(values)]
        details = {"n_voxels": int(values.size), "n_undefined": int(values.size - valid.size)}
        for stat_name, stat in (stats if suffix == "" else stats[:1]):
            label = f"{name}{stat_name if suffix == '' else suffix}"
            if valid.size == 0:
                out.append(skipped(label, "every voxel is constant over the test images", chance))
            else:
                out.append(Metric(label, float(stat(valid)), chance, details=dict(details)))
    return out


def encoding_pearson(measured: ArrayLike, predicted: ArrayLike, roi_patch: Sequence[int] | None = None,
                     roi_names: Sequence[str] | None = None) -> list[Metric]:
    """Voxel-wise Pearson r (mean and median over voxels, mean per ROI); chance 0."""
    return _voxel_summary("encoding_pearson", voxelwise_pearson(measured, predicted), 0.0,
                          roi_patch, roi_names, median=True)


def encoding_mse(measured: ArrayLike, predicted: ArrayLike, roi_patch: Sequence[int] | None = None,
                 roi_names: Sequence[str] | None = None) -> list[Metric]:
    """MSE between measured and predicted fMRI over all voxels and per ROI (no chance level)."""
    m, p = _paired_fmri(measured, predicted)
    return _voxel_summary("encoding_mse", ((m - p) ** 2).mean(0), None, roi_patch, roi_names, median=False)


def fmri_identification(measured: ArrayLike, predicted: ArrayLike, n_way: int | None = None, metric: str = "pcc",
                        trials: int = DEFAULT_TRIALS, seed: int | np.random.Generator = DEFAULT_SEED) -> list[Metric]:
    """Identify each test image from its predicted fMRI among the measured ones.

    Pair-wise (chance 0.5), top-1 among all N (chance 1/N) and, with `n_way`,
    n-way top-1 (chance 1/n_way). Scores: `metric` ('pcc' or 'cosine') between
    predicted[i] and measured[j].
    """
    scores = feature_scores(measured, predicted, metric)  # [N, 1, N]
    n = scores.shape[0]
    out = [_rate_metric(f"fmri_pairwise_{metric}", pairwise_rates(scores, True), PAIRWISE_CHANCE),
           _rate_metric(f"fmri_top1_of_{n}_{metric}", (_rivals(scores, True) == 0).astype(np.float64), 1.0 / n)]
    if n_way is not None:
        out.append(_n_way_metric(f"fmri_{n_way}way_top1_{metric}", _rivals(scores, True), n - 1, n_way, trials, seed))
    return out


def noise_ceiling_fraction(measured_r: ArrayLike, noise_free: ArrayLike, measured: ArrayLike | None = None,
                           noise_sd: float | None = None, n_repeats: int | None = None,
                           prefix: str = "") -> list[Metric]:
    """How close the encoding correlations come to the best achievable (simulated data only).

    The noise ceiling of a voxel is the correlation that the noise-free
    responses themselves reach with the measured (repeat-averaged) test
    responses: no prediction can expect to do better. It is taken either
    - empirically, r_ceil = voxelwise_pearson(noise_free [N, V], measured [N, V]), or
    - from the noise model, r_ceil = sqrt(var_s / (var_s + noise_sd^2 / n_repeats)),
      var_s the variance of the noise-free responses over the N images.
    measured_r `[V]` is the voxel-wise r of the predictions (`voxelwise_pearson`).
    Reports mean r_ceil, mean(measured_r) / mean(r_ceil) over voxels where both
    are defined, and the median over voxels with r_ceil > 0 of measured_r / r_ceil.
    """
    r_pred = _numpy(measured_r).astype(np.float64)
    s = _numpy(noise_free).astype(np.float64)
    if s.ndim != 2 or r_pred.shape != (s.shape[1],):
        raise DataError(describe("noise ceiling", "noise-free responses [N, V] and voxel correlations [V]",
                                 f"{s.shape} and {r_pred.shape}"))
    if (measured is None) == (noise_sd is None or n_repeats is None):
        raise ConfigError(describe("noise ceiling", "either measured responses or both noise_sd and n_repeats",
                                   f"measured={'given' if measured is not None else None}, "
                                   f"noise_sd={noise_sd}, n_repeats={n_repeats}"))
    if measured is not None:
        r_ceil = voxelwise_pearson(s, measured)
        source = "empirical"
    else:
        var_s = s.var(0)
        with np.errstate(invalid="ignore"):
            r_ceil = np.sqrt(var_s / (var_s + noise_sd ** 2 / n_repeats))
        source = f"noise model (sd {noise_sd}, {n_repeats} repeats)"
    both = np.isfinite(r_pred) & np.isfinite(r_ceil)
    positive = both & (r_ceil > 0)
    details = {"ceiling": source, "n_voxels": int(r_pred.size), "n_used": int(both.sum())}
    names = [prefix + n for n in ("noise_ceiling_mean_r", "fraction_of_noise_ceiling",
                                  "median_voxel_fraction_of_ceiling")]
    if not positive.any():
        return [skipped(name, "no voxel has a defined, positive noise ceiling") for name in names]
    return [Metric(names[0], float(r_ceil[both].mean()), None, details=details),
            Metric(names[1], float(r_pred[both].mean() / r_ceil[both].mean()), None, details=details),
            Metric(names[2], float(np.median(r_pred[positive] / r_ceil[positive])), None,
                   details={**details, "n_used": int(positive.sum())})]


# ----------------------------------------------------------------------------- reporting

def summarize(metrics: Sequence[Metric]) -> dict[str, dict[str, Any]]:
    """`{name: metric.to_dict()}` in order; names must be unique."""
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        if metric.name in out:
            raise ConfigError(describe("metrics", "unique metric names", f"{metric.name!r} twice"))
        out[metric.name] = metric.to_dict()
    return out


def to_csv_rows(metrics: Sequence[Metric]) -> list[dict[str, Any]]:
    """One row per metric: name, value, chance, skipped reason, 95% interval, p-value, sd over samples.

    None where absent."""
    rows = []
    for metric in metrics:
        ci = metric.details.get(CI_KEY) or (None, None)
        rows.append({"name": metric.name, "value": metric.value, "chance": metric.chance, "skipped": metric.skipped,
                     "ci_low": ci[0], "ci_high": ci[1], "p_value": metric.details.get("p_value"),
                     "sd_over_samples": metric.details.get("sd_over_samples")})
    return rows


def write_metrics(folder: str | Path, metrics: Sequence[Metric], stem: str = "metrics") -> tuple[Path, Path]:
    """Write `<stem>.json` (full, with details) and `<stem>.csv` into `folder`; never overwrites."""
    folder = Path(folder)
    json_path, csv_path = folder / f"{stem}.json", folder / f"{stem}.csv"
    for path in (json_path, csv_path):
        if path.exists():
            raise FileExistsError(describe(path, "a new file (results are never overwritten)", "an existing file"))
    summary = summarize(metrics)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(to_csv_rows(metrics))
    atomic_write_json(json_path, summary)
    atomic_write_text(csv_path, buf.getvalue())
    return json_path, csv_path
