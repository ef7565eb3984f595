"""Errors raised for bad user input.

Every message names the file (or key, or option), what was expected and what
was found, so that a user can fix the input without reading the code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


class LEAError(Exception):
    """Base class for all errors this project raises on purpose."""


class ConfigError(LEAError, ValueError):
    """A configuration value is unknown, of the wrong type, or inconsistent."""


class DataError(LEAError, ValueError):
    """A data file is missing, or holds arrays of the wrong key, shape or dtype."""


class CheckpointError(LEAError, ValueError):
    """A checkpoint is missing, unsafe, or does not fit the model."""


class OutputError(LEAError, OSError):
    """An output folder or file cannot be created or written (permissions, a file in the way, disk full)."""


def describe(where: str | Path | None, expected: str, found: Any) -> str:
    """One-line message: `<where>: expected <expected>, found <found>`."""
    prefix = f"{where}: " if where is not None else ""
    return f"{prefix}expected {expected}, found {found}"
