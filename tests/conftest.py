"""Shared fixtures: a tiny simulated dataset tree, built once per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from datasets.simulate import BOLD_DIR, GOD_DIR, simulate

SIM_SEED = 0


@pytest.fixture(scope="session")
def sim_root(tmp_path_factory) -> Path:
    """Root of a tiny simulated tree: `Kamitani/npz`, `BOLD5000` and `ground_truth` (seed 0).

    Read-only: tests that modify files must copy them first (see `god_copy`, `bold_copy`).
    """
    return simulate(tmp_path_factory.mktemp("sim") / "simulated", scale="tiny", seed=SIM_SEED,
                    progress=False)


@pytest.fixture
def god_copy(sim_root, tmp_path) -> Path:
    """A writable copy of the simulated `Kamitani/npz` folder."""
    return Path(shutil.copytree(sim_root / GOD_DIR, tmp_path / "npz"))


@pytest.fixture
def bold_copy(sim_root, tmp_path) -> Path:
    """A writable copy of the simulated `BOLD5000` folder."""
    return Path(shutil.copytree(sim_root / BOLD_DIR, tmp_path / "BOLD5000"))
