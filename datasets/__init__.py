"""Dataset loaders (GOD, BOLD5000) and the simulated-brain data generator."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets.bold5000 import load_bold5000
from datasets.common import SubjectData
from datasets.god import load_god
from utils.errors import ConfigError, describe

LOADERS = {"GOD": load_god, "BOLD5000": load_bold5000}


def load_subject(dataset: str, root: str | Path, subject: str, **kwargs: Any) -> SubjectData:
    """Load `subject` of `dataset` ('GOD' or 'BOLD5000') from `root`; kwargs go to the loader."""
    if dataset not in LOADERS:
        raise ConfigError(describe("dataset", f"one of {tuple(LOADERS)}", repr(dataset)))
    return LOADERS[dataset](root, subject, **kwargs)
