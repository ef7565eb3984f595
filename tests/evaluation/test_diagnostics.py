"""Stage-by-stage diagnostics on the tiny simulated data."""
import numpy as np
import pytest
import torch

from evaluation.diagnostics import STAGES, diagnose, sample_diversity
from evaluation.metrics import resize_images
from evaluation.retrieval import nearest_training_images
from evaluation.semantic_sim import ATTRIBUTES
from models.image_features import build_image_features, features_of
from utils.errors import DataError

DECODED_SIZE = 32


def test_sample_diversity_from_copies_to_different_stimuli():
    gt = torch.randn(6, 20, generator=torch.Generator().manual_seed(0))
    copies = gt[:, None].expand(6, 3, 20)
    assert sample_diversity(copies, gt).value == pytest.approx(0.0, abs=1e-12)
    other = torch.stack([gt, gt.roll(1, 0), gt.roll(2, 0)], 1)           # samples = different stimuli
    m = sample_diversity(other, gt)
    assert 0.7 < m.value < 1.3 and m.details["within_trial_distance"] > 0
    assert sample_diversity(gt[:, None], gt).skipped == "one sample per trial"


def test_every_stage_is_scored_and_drawn(god_subject, god_scorer):
    extractor = build_image_features("handcrafted", dim=64, normalize=True)
    feature_fn = lambda images: features_of(extractor, images)  # noqa: E731
    gt = resize_images(god_subject.test_images, (DECODED_SIZE, DECODED_SIZE))     # [T, H, W, 3]
    true_features = feature_fn(god_subject.test_images)
    predicted = true_features + 0.5 * torch.randn(true_features.shape, generator=torch.Generator().manual_seed(1))
    train_features = feature_fn(god_subject.train_images)
    decoded = np.stack([np.roll(gt, 1, axis=0), gt], axis=1)                  # [T, 2, H, W, 3]
    diag = diagnose(gt=gt, decoded=decoded, train_images=god_subject.train_images, train_features=train_features,
                    predicted_features=predicted, true_features=true_features,
                    round_trip=gt,                                             # a lossless tokenizer
                    generate=lambda f: np.repeat(gt[:, None], 2, axis=1),      # a perfect, deterministic image side
                    feature_fn=feature_fn, backend="handcrafted", n_way=len(gt), scorer=god_scorer,
                    semantic_reason=None)
    m = {x.name: x for x in diag.metrics}
    assert list(diag.table_rows) == list(STAGES)
    assert m["tokenizer_round_trip/handcrafted_pairwise_pcc"].value == 1.0
    assert m["decoded_from_true_features/handcrafted_pairwise_pcc"].value == 1.0
    assert m["decoded_from_true_features/sample_diversity"].value == pytest.approx(0.0, abs=1e-9)
    assert m["lea_decoded/handcrafted_pairwise_pcc"].value < 1.0
    assert m["lea_decoded/sample_diversity"].value > 0.3
    assert m["stimuli/sim_attribute_accuracy"].value == m["tokenizer_round_trip/sim_attribute_accuracy"].value
    for attribute in ATTRIBUTES:                  # each attribute per stage, in the metrics but not the table
        for stage in STAGES:
            assert f"{stage}/sim_attribute_accuracy_{attribute}" in m
        assert m[f"decoded_from_true_features/sim_attribute_accuracy_{attribute}"].value == \
            m[f"stimuli/sim_attribute_accuracy_{attribute}"].value
    assert "retrieval_baseline/sample_diversity" not in m and "tokenizer_round_trip/sample_diversity" not in m
    # the read-outs score the features themselves: the noisy predicted ones carry less than the true ones
    assert m["true_features_readout/sim_attribute_accuracy"].value == \
        god_scorer.score_features(train_features, true_features)[0].value
    assert m["predicted_features_readout/sim_attribute_accuracy"].value < \
        m["true_features_readout/sim_attribute_accuracy"].value
    assert "true_features_readout/handcrafted_pairwise_pcc" not in m
    assert set(diag.stage_images) == set(STAGES) - {"true_features_readout", "predicted_features_readout"}
    # retrieval shows the training image nearest to the predicted features
    nearest = nearest_training_images(predicted, train_features)[:, 0]
    expected = resize_images(god_subject.train_images[nearest], gt.shape[1:3])
    np.testing.assert_array_equal(diag.stage_images["retrieval_baseline"][:, 0], expected)
    table = diag.table()
    assert table["columns"][:2] == ["stage", "sim_attribute_accuracy"]
    assert not any(c.startswith("sim_attribute_accuracy_") for c in table["columns"])
    assert [row[0] for row in table["rows"]] == [*STAGES.values(), "chance"]
    assert len(diag.figure.size) == 2 and diag.figure.size[0] > diag.figure.size[1] / 4


def test_recorded_data_skips_only_the_semantic_columns(god_subject):
    extractor = build_image_features("handcrafted", dim=32, normalize=True)
    feature_fn = lambda images: features_of(extractor, images)  # noqa: E731
    gt = god_subject.test_images
    feats = feature_fn(gt)
    diag = diagnose(gt=gt, decoded=gt[:, None], train_images=god_subject.train_images,
                    train_features=feature_fn(god_subject.train_images), predicted_features=feats,
                    true_features=feats, round_trip=gt, generate=lambda f: gt[:, None],
                    feature_fn=feature_fn, backend="handcrafted", n_way=None, scorer=None,
                    semantic_reason="no ground truth")
    m = {x.name: x for x in diag.metrics}
    assert m["lea_decoded/sim_attribute_accuracy"].skipped == "no ground truth"
    assert m["predicted_features_readout/sim_attribute_accuracy"].skipped == "no ground truth"
    assert m["lea_decoded/handcrafted_pairwise_pcc"].value == 1.0
    assert diag.table_rows["stimuli"] == {}


def test_a_round_trip_at_another_resolution_than_the_ground_truth_is_refused(god_subject):
    extractor = build_image_features("handcrafted", dim=32, normalize=True)
    feature_fn = lambda images: features_of(extractor, images)  # noqa: E731
    gt = resize_images(god_subject.test_images, (DECODED_SIZE, DECODED_SIZE))     # [T, H, W, 3]
    feats = feature_fn(gt)
    with pytest.raises(DataError, match=r"tokenizer round trip of the test stimuli.*\[.*32, 32, 3\].*found"):
        diagnose(gt=gt, decoded=gt[:, None], train_images=god_subject.train_images,
                 train_features=feature_fn(god_subject.train_images), predicted_features=feats,
                 true_features=feats, round_trip=god_subject.test_images, generate=lambda f: gt[:, None],
                 feature_fn=feature_fn, backend="handcrafted", n_way=None, scorer=None,
                 semantic_reason="no ground truth")
