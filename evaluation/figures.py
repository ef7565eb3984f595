"""Result figures drawn with PIL: image grids and measured-vs-predicted voxel plots.

- `sample_image.png`: one row per test trial, the ground-truth image first, then
  the decoded samples.
- `sample_fmri.png`: one panel per ROI group, each a scatter of measured (x) against
  predicted (y) voxel responses over the test trials, with the Pearson r of all the
  panel's points pooled (voxel-wise r is in the metrics).
- per-image PNGs: `images/<trial>_gt.png` and `images/<trial>_s<k>.png`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from utils.io import atomic_write_bytes

CELL = 96                 # side of one thumbnail in a grid, pixels
PAD = 4                   # gap between cells
HEADER = 16               # height of the caption strip above a grid
PANEL = 200               # side of one scatter panel
PANEL_MARGIN = 22         # room for a panel's title
MAX_POINTS = 4000         # scatter points drawn per panel (a fixed-seed subset)
POINT_SEED = 0
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
GRID_INK = (200, 200, 200)
POINT_INK = (31, 119, 180)
PANELS_PER_ROW = 4
PERCENTILE_RANGE = (0.5, 99.5)  # axis limits of a scatter panel, robust to outliers


def _png_bytes(image: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | Path, image: Image.Image | np.ndarray) -> Path:
    """Write a PIL image or a uint8 `[H, W, 3]` array as PNG (atomically)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return atomic_write_bytes(path, _png_bytes(image))


def _thumb(image: np.ndarray, cell: int) -> Image.Image:
    return Image.fromarray(image).resize((cell, cell), Image.Resampling.BILINEAR)


def sample_grid(ground_truth: np.ndarray, samples: np.ndarray, max_rows: int | None = None,
                cell: int = CELL) -> Image.Image:
    """Grid of ground truth + samples.

    Args:
        ground_truth: uint8 [T, H, W, 3].
        samples: uint8 [T, S, H, W, 3].
        max_rows: draw at most this many trials (None = all).
    Returns:
        PIL image with T rows and 1 + S columns under a caption strip.
    """
    columns = [("ground truth", ground_truth)]
    columns += [(f"sample {k + 1}", samples[:, k]) for k in range(samples.shape[1])]
    return column_grid(columns, max_rows=max_rows, cell=cell)


def column_grid(columns: Sequence[tuple[str, np.ndarray]], max_rows: int | None = None,
                cell: int = CELL) -> Image.Image:
    """Captioned image columns side by side, one row per trial.

    Args:
        columns: (caption, uint8 images [T, H, W, 3]) per column, all with the same T
            (image sizes may differ: every image is drawn as a `cell` x `cell` thumbnail).
        max_rows: draw at most this many trials (None = all).
    """
    t = len(columns[0][1])
    rows = t if max_rows is None else min(t, max_rows)
    width = PAD + len(columns) * (cell + PAD)
    height = HEADER + PAD + rows * (cell + PAD)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, (caption, images) in enumerate(columns):
        x = PAD + k * (cell + PAD)
        draw.text((x, 2), caption, fill=INK, font=font)
        for i in range(rows):
            canvas.paste(_thumb(images[i], cell), (x, HEADER + PAD + i * (cell + PAD)))
    return canvas


def save_image_files(folder: str | Path, ground_truth: np.ndarray, samples: np.ndarray) -> list[Path]:
    """Per-trial PNGs `<folder>/<i>_gt.png` and `<folder>/<i>_s<k>.png`; returns the paths written."""
    folder = Path(folder)
    paths = []
    digits = len(str(max(len(ground_truth) - 1, 0)))
    for i in range(len(ground_truth)):
        stem = f"{i:0{digits}d}"
        paths.append(save_png(folder / f"{stem}_gt.png", ground_truth[i]))
        for k in range(samples.shape[1]):
            paths.append(save_png(folder / f"{stem}_s{k + 1}.png", samples[i, k]))
    return paths


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _scatter_panel(measured: np.ndarray, predicted: np.ndarray, title: str,
                   rng: np.random.Generator) -> Image.Image:
    """One panel: measured (x) vs predicted (y), both flattened 1-D arrays of one length."""
    panel = Image.new("RGB", (PANEL, PANEL + PANEL_MARGIN), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    font = ImageFont.load_default()
    r = _pearson(measured, predicted)
    draw.text((4, 4), f"{title}  pooled r={r:.3f}", fill=INK, font=font)
    box = (PAD, PANEL_MARGIN, PANEL - PAD, PANEL + PANEL_MARGIN - PAD)
    draw.rectangle(box, outline=GRID_INK)
    both = np.concatenate([measured, predicted])
    lo, hi = np.percentile(both, PERCENTILE_RANGE)
    if not hi > lo:
        lo, hi = lo - 1.0, hi + 1.0
    if len(measured) > MAX_POINTS:
        keep = rng.choice(len(measured), MAX_POINTS, replace=False)
        measured, predicted = measured[keep], predicted[keep]
    span_x, span_y = box[2] - box[0], box[3] - box[1]
    draw.line([(box[0], box[3]), (box[2], box[1])], fill=GRID_INK)  # identity line
    xs = box[0] + np.clip((measured - lo) / (hi - lo), 0, 1) * span_x
    ys = box[3] - np.clip((predicted - lo) / (hi - lo), 0, 1) * span_y
    for x, y in zip(xs, ys):
        draw.point((float(x), float(y)), fill=POINT_INK)
    return panel


def fmri_scatter(measured: np.ndarray, predicted: np.ndarray, roi_names: Sequence[str],
                 roi_patch: Sequence[int]) -> Image.Image:
    """Measured vs predicted voxel responses, one panel per ROI group plus one for all voxels.

    Args:
        measured, predicted: [T, V] over the same voxels (V = sum(roi_patch)).
        roi_names, roi_patch: group names and sizes, in voxel order.
    """
    rng = np.random.default_rng(POINT_SEED)
    bounds = np.cumsum([0, *roi_patch])
    panels = [_scatter_panel(measured.ravel(), predicted.ravel(), "all voxels", rng)]
    for name, start, stop in zip(roi_names, bounds[:-1], bounds[1:]):
        panels.append(_scatter_panel(measured[:, start:stop].ravel(), predicted[:, start:stop].ravel(),
                                     f"{name} ({stop - start})", rng))
    cols = min(PANELS_PER_ROW, len(panels))
    rows = -(-len(panels) // cols)
    pw, ph = panels[0].size
    canvas = Image.new("RGB", (cols * pw, HEADER + rows * ph), BACKGROUND)
    ImageDraw.Draw(canvas).text((PAD, 2), "measured (x) vs predicted (y) test fMRI, per ROI",
                                fill=INK, font=ImageFont.load_default())
    for k, panel in enumerate(panels):
        canvas.paste(panel, ((k % cols) * pw, HEADER + (k // cols) * ph))
    return canvas
