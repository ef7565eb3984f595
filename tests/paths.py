"""Paths the tests share: the repository root they run against."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
