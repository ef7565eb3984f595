"""Simulated-data semantic accuracy: stimulus attributes, the attribute classifier and its metrics."""
import json

import numpy as np
import pytest

from datasets import load_subject
from datasets.simulate import ATTRIBUTE_SIZES, BOLD_DIR, GOD_DIR
from evaluation.semantic_sim import (ATTRIBUTES, classifier_features, find_categories_file, read_categories,
                                     semantic_scorer_or_reason, skipped_semantic, stimulus_categories)
from utils.errors import DataError

ATTRIBUTE_CHANCE = float(np.mean([1 / k for k in ATTRIBUTE_SIZES]))


def test_stimulus_categories_are_the_simulators(sim_root, god_subject):
    path = find_categories_file(sim_root / GOD_DIR)
    assert path == sim_root / "ground_truth" / "categories.json"
    cats = read_categories(path)
    train, test = stimulus_categories(god_subject, cats, path.parent)
    with np.load(sim_root / "ground_truth" / "GOD" / "sbj_1.npz") as truth:
        np.testing.assert_array_equal(train, truth["train_category"])
        np.testing.assert_array_equal(test, truth["test_category"])
    # BOLD5000, the subject that saw only part of the images: categories found by image name
    bold = load_subject("BOLD5000", sim_root / BOLD_DIR, "CSI2")
    train, test = stimulus_categories(bold, cats, path.parent)
    with np.load(sim_root / "ground_truth" / "BOLD5000" / "CSI2.npz") as truth:
        of_name = dict(zip(truth["image_names"].tolist(), truth["image_category"].tolist()))
    assert test.tolist() == [of_name[n] for n in bold.source["test_image_names"]]
    assert len(train) == len(bold.train_images) and all(cats[c]["used_by"] == "BOLD5000" for c in train)


def test_ceiling_chance_and_a_wrong_decoder(god_subject, god_scorer):
    stimuli = god_subject.test_images
    metrics = {m.name: m for m in god_scorer.score(stimuli[:, None])}
    n = len(np.unique(god_subject.test_labels))
    assert list(metrics)[:2] == ["sim_attribute_accuracy", f"sim_category_{n}way_top1"]
    assert metrics["sim_attribute_accuracy"].chance == pytest.approx(ATTRIBUTE_CHANCE)
    assert metrics[f"sim_category_{n}way_top1"].chance == pytest.approx(1 / n)
    for a, k in zip(ATTRIBUTES, ATTRIBUTE_SIZES):
        assert metrics[f"sim_attribute_accuracy_{a}"].chance == pytest.approx(1 / k)
    for m in metrics.values():      # the stimuli themselves reach the ceiling exactly
        assert m.value == m.details["stimuli_ceiling"]
    # learned from the training stimuli only: colour and position of unseen categories are recognised
    assert metrics["sim_attribute_accuracy_palette"].value >= 0.8
    assert metrics["sim_attribute_accuracy_layout"].value >= 0.7
    assert metrics["sim_attribute_accuracy"].value > ATTRIBUTE_CHANCE + 0.2
    # every trial showing another trial's stimulus: far below the ceiling
    wrong = {m.name: m for m in god_scorer.score(np.roll(stimuli, 1, axis=0)[:, None])}
    assert wrong["sim_attribute_accuracy"].value < metrics["sim_attribute_accuracy"].value - 0.15
    assert wrong[f"sim_category_{n}way_top1"].value < metrics[f"sim_category_{n}way_top1"].value


def test_samples_are_averaged(god_subject, god_scorer):
    stimuli = god_subject.test_images
    right = god_scorer.score(stimuli[:, None])[0].value
    wrong = god_scorer.score(np.roll(stimuli, 1, axis=0)[:, None])[0].value
    both = god_scorer.score(np.stack([stimuli, np.roll(stimuli, 1, axis=0)], axis=1))[0]
    assert both.value == pytest.approx((right + wrong) / 2)
    assert both.details["n_samples"] == 2
    with pytest.raises(DataError, match="test trials"):
        god_scorer.score(stimuli[:3, None])


def test_feature_readout_reads_the_features_not_images(god_subject, god_scorer):
    """score_features: the image classifier's metrics from a read-out of any features, fitted on the
    training stimuli's; on the classifier's own features it is that classifier."""
    train = classifier_features(god_subject.train_images)
    test = classifier_features(god_subject.test_images)
    readout = {m.name: m for m in god_scorer.score_features(train, test)}
    images = {m.name: m for m in god_scorer.score(god_subject.test_images[:, None])}
    for name, m in images.items():
        assert readout[name].value == pytest.approx(m.value) and readout[name].chance == m.chance
        assert "stimuli_ceiling" not in readout[name].details and readout[name].details["n_samples"] == 1
    # another trial's features: far below
    rolled = god_scorer.score_features(train, test.roll(1, 0))[0].value
    assert rolled < readout["sim_attribute_accuracy"].value - 0.15
    with pytest.raises(DataError, match="test trials"):
        god_scorer.score_features(train, test[:3])
    with pytest.raises(DataError, match="training stimuli"):
        god_scorer.score_features(train[:5], test)


def test_recorded_data_is_skipped_with_the_reason(god_copy, tmp_path):
    data = load_subject("GOD", god_copy, "sbj_1")
    scorer, reason = semantic_scorer_or_reason(data, god_copy)
    assert scorer is None and "categories.json" in reason
    assert all(m.value is None and m.skipped == reason for m in skipped_semantic(reason))
    bad = tmp_path / "categories.json"
    bad.write_text(json.dumps([{"id": 0, "class_id": 3, "shape": 1}]))
    with pytest.raises(DataError, match="categories.json"):
        read_categories(bad)
