"""Training logs: a CSV file, TensorBoard when installed, a tqdm bar (rank 0 only), PNG grids."""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from utils.io import atomic_write_bytes

CSV_NAME = "log.csv"
FIXED_COLUMNS = ("step", "lr", "time_s")


class RunLogger:
    """Writes one CSV row per logged step; columns are fixed by the first row.

    `enabled=False` (ranks other than 0) turns every method into a no-op; `progress=False` keeps the
    CSV and TensorBoard logs but shows no bar.
    """

    def __init__(self, run_dir: Path | None, total_steps: int, start_step: int = 0,
                 enabled: bool = True, desc: str = "train", progress: bool = True,
                 clock_start: float | None = None):
        self.enabled = enabled and run_dir is not None
        self.columns: list[str] | None = None
        # time_s counts from clock_start (the Trainer's: a resumed run's goes on from its checkpoint's)
        self.start_time = time.time() if clock_start is None else clock_start
        self.tb = None
        self.bar = None
        if not self.enabled:
            return
        self.path = Path(run_dir) / CSV_NAME
        if progress:
            self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, dynamic_ncols=True)
        self.tb = _tensorboard_writer(Path(run_dir) / "tensorboard")

    def step(self, losses: dict[str, float]) -> None:
        """Advance the progress bar by one optimiser step, showing the current losses."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)

    def log(self, step: int, lr: float, losses: dict[str, float]) -> None:
        """Append a row (step, lr, training time so far, losses) to the CSV and TensorBoard."""
        if not self.enabled:
            return
        row = {"step": step, "lr": lr, "time_s": round(time.time() - self.start_time, 3), **losses}
        if self.columns is None:
            self.columns = list(FIXED_COLUMNS) + sorted(losses)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"{self.path}: log columns {sorted(unknown)} appeared after the header "
                           f"{self.columns} was written")
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(c, "") for c in self.columns])
        if self.tb is not None:
            self.tb.add_scalar("lr", lr, step)
            for k, v in losses.items():
                self.tb.add_scalar(k, v, step)

    def message(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def _tensorboard_writer(path: Path):
    """A SummaryWriter when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))


def read_log(run_dir: str | Path) -> list[dict[str, float]]:
    """Rows of a run's CSV log as dicts of floats."""
    with open(Path(run_dir) / CSV_NAME, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write float images [N, 3, H, W] in [0, 1] as one PNG grid (rows of `nrow`, no gaps), atomically."""
    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=min(nrow, len(images)), padding=0)
    buf = io.BytesIO()
    save_image(grid, buf, format="PNG")  # [3, rows*H, cols*W]
    return atomic_write_bytes(path, buf.getvalue())
