"""Fixtures of the evaluation tests: a simulated subject and its semantic scorer, built once."""
from __future__ import annotations

import pytest

from datasets import load_subject
from datasets.simulate import GOD_DIR
from evaluation.semantic_sim import semantic_scorer_or_reason


@pytest.fixture(scope="session")
def god_subject(sim_root):
    return load_subject("GOD", sim_root / GOD_DIR, "sbj_1")


@pytest.fixture(scope="session")
def god_scorer(sim_root, god_subject):
    """The attribute classifier fitted on sbj_1's training stimuli (tiny simulated GOD)."""
    scorer, reason = semantic_scorer_or_reason(god_subject, sim_root / GOD_DIR)
    assert reason is None
    return scorer
