"""Decoding and encoding with trained weights: the Python API (`api.py`, re-exported here as `LEA`),
the LEA runner behind `LEA_GOD.py` / `LEA_BOLD.py` (run_lea.py), and the demo set-up that simulates
data and trains missing demo weights (demo.py).

`LEA` is imported on first use, so that `python -m inference.demo_weights` runs its module once."""
from typing import Any

__all__ = ["LEA"]


def __getattr__(name: str) -> Any:
    if name == "LEA":
        from inference.api import LEA
        return LEA
    raise AttributeError(f"module 'inference' has no attribute {name!r}")
