"""Decoding and encoding with trained weights: the Python API (`api.py`, re-exported here as `LEA`),
the LEA runner behind `LEA_GOD.py` / `LEA_BOLD.py` (run_lea.py), and the demo set-up that simulates
data and trains missing demo weights (demo.py)."""
from inference.api import LEA

__all__ = ["LEA"]
