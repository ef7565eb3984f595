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


def normalisation_options(dataset: str, test_normalisation: str = "train", stats_from: str = "train"
                          ) -> dict[str, str]:
    """Loader keyword arguments of the normalisation options (`Data.test_normalisation`, `Data.stats_from`).

    GOD takes `test_normalisation`, BOLD5000 `stats_from`; the other option must keep its default.
    """
    if dataset == "GOD":
        if stats_from != "train":
            raise ConfigError(describe("Data.stats_from", "'train' for GOD (a BOLD5000 option)", repr(stats_from)))
        return {"test_normalisation": test_normalisation}
    if test_normalisation != "train":
        raise ConfigError(describe("Data.test_normalisation", f"'train' for {dataset} (a GOD option)",
                                   repr(test_normalisation)))
    return {"stats_from": stats_from}
