"""Evaluation charts drawn with PIL: encoding r per ROI, and identification accuracy against n-way.

- `roi_bars`: per ROI (and all voxels), one bar per model (LEA, baselines) of the
  mean voxel-wise r with its 95% interval as a whisker, and the noise ceiling of
  the group as a horizontal black tick.
- `identification_curve`: the expected n-way top-1 accuracy against n (2 .. N)
  for each model, computed exactly from the rank of each item's own candidate,
  with the chance curve 1/n dashed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from evaluation.metrics import n_way_success

WIDTH, HEIGHT = 800, 360
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 50, 250, 28, 40
BACKGROUND, INK, GRID_INK = (255, 255, 255), (0, 0, 0), (215, 215, 215)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))
CHANCE_INK = (120, 120, 120)
TICKS = 5
CURVE_TRIALS = 1  # the curve uses the exact expectation; the Monte-Carlo draw is not needed


def _frame(title: str, y_lo: float, y_hi: float) -> tuple[Image.Image, ImageDraw.ImageDraw, tuple[int, int, int, int]]:
    canvas = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    box = (MARGIN_LEFT, MARGIN_TOP, WIDTH - MARGIN_RIGHT, HEIGHT - MARGIN_BOTTOM)
    draw.text((MARGIN_LEFT, 6), title, fill=INK, font=font)
    for k in range(TICKS + 1):
        value = y_lo + (y_hi - y_lo) * k / TICKS
        y = box[3] - (box[3] - box[1]) * k / TICKS
        draw.line([(box[0], y), (box[2], y)], fill=GRID_INK)
        draw.text((4, y - 6), f"{value:.2f}", fill=INK, font=font)
    draw.rectangle(box, outline=INK)
    return canvas, draw, box


def _legend(draw: ImageDraw.ImageDraw, box, labels: Sequence[str], extra: Sequence[tuple[str, tuple]] = ()) -> None:
    font = ImageFont.load_default()
    entries = [(label, PALETTE[k % len(PALETTE)]) for k, label in enumerate(labels)] + list(extra)
    for k, (label, colour) in enumerate(entries):
        y = box[1] + 4 + 16 * k
        draw.rectangle([box[2] + 10, y, box[2] + 22, y + 10], fill=colour)
        draw.text((box[2] + 28, y), label, fill=INK, font=font)


def roi_bars(groups: Sequence[str], models: dict[str, Sequence[float]], ceiling: Sequence[float] | None,
             intervals: dict[str, Sequence[Sequence[float] | None]] | None = None,
             title: str = "encoding: mean voxel-wise r per ROI") -> Image.Image:
    """Bars of `models[name][g]` per group g, whiskers from `intervals`, ceiling ticks (nan = none)."""
    values = [v for vals in models.values() for v in vals if np.isfinite(v)]
    values += [c for c in (ceiling or []) if np.isfinite(c)]
    y_lo = min(0.0, min(values, default=0.0))
    y_hi = max(values, default=1.0) * 1.1 or 1.0
    canvas, draw, box = _frame(title, y_lo, y_hi)
    font = ImageFont.load_default()

    def y_of(v: float) -> float:
        return box[3] - (v - y_lo) / (y_hi - y_lo) * (box[3] - box[1])

    slot = (box[2] - box[0]) / max(len(groups), 1)
    bar = slot * 0.8 / max(len(models), 1)
    for g, group in enumerate(groups):
        x0 = box[0] + g * slot + slot * 0.1
        for k, (name, vals) in enumerate(models.items()):
            v = vals[g]
            if not np.isfinite(v):
                continue
            left = x0 + k * bar
            draw.rectangle([left, min(y_of(v), y_of(0)), left + bar - 1, max(y_of(v), y_of(0))],
                           fill=PALETTE[k % len(PALETTE)])
            ci = (intervals or {}).get(name, [None] * len(groups))[g]
            if ci is not None:
                mid = left + bar / 2
                draw.line([(mid, y_of(ci[0])), (mid, y_of(ci[1]))], fill=INK)
        if ceiling is not None and np.isfinite(ceiling[g]):
            y = y_of(ceiling[g])
            draw.line([(x0, y), (x0 + slot * 0.8, y)], fill=INK, width=3)
        draw.text((x0, box[3] + 6), group[:10], fill=INK, font=font)
    extra = [("noise ceiling", INK)] if ceiling is not None else []
    _legend(draw, box, list(models), extra)
    return canvas


def n_way_curve(rivals: np.ndarray, pool: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean n-way top-1 accuracy for n = 2 .. pool + 1 from rival counts `[N, S]` -> (n, accuracy)."""
    ns = np.arange(2, pool + 2)
    acc = np.array([n_way_success(rivals, pool, int(n), CURVE_TRIALS)[1].mean() for n in ns])
    return ns, acc


def identification_curve(curves: dict[str, tuple[np.ndarray, np.ndarray]],
                         title: str = "identification: top-1 accuracy vs n-way") -> Image.Image:
    """Accuracy against n for each model; chance 1/n dashed."""
    canvas, draw, box = _frame(title, 0.0, 1.0)
    font = ImageFont.load_default()
    n_max = max(int(ns.max()) for ns, _ in curves.values())
    span = max(n_max - 2, 1)

    def xy(n: float, a: float) -> tuple[float, float]:
        return box[0] + (n - 2) / span * (box[2] - box[0]), box[3] - a * (box[3] - box[1])

    chance = [xy(n, 1.0 / n) for n in range(2, n_max + 1)]
    for k in range(0, len(chance) - 1, 2):
        draw.line([chance[k], chance[k + 1]], fill=CHANCE_INK)
    for k, (ns, acc) in enumerate(curves.values()):
        draw.line([xy(n, a) for n, a in zip(ns, acc)], fill=PALETTE[k % len(PALETTE)], width=2)
    for n in np.linspace(2, n_max, TICKS).round().astype(int):
        x, _ = xy(n, 0)
        draw.text((x - 4, box[3] + 6), str(n), fill=INK, font=font)
    draw.text(((box[0] + box[2]) // 2 - 10, box[3] + 22), "n", fill=INK, font=font)
    _legend(draw, box, list(curves), [("chance 1/n", CHANCE_INK)])
    return canvas
