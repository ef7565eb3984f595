"""models/rerank.py and best-of-N sampling in models/lea.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.rerank import best_candidates, feature_agreement, take_kept
from utils.config import SamplingConfig, load_config
from utils.errors import ConfigError
from tests.models.test_lea_pipeline import FEATURE_DIM, NUM_TEST, lea  # noqa: F401  (fixture)


def test_agreement_is_cosine_of_standardised_features():
    mean, std = torch.tensor([1.0, 0.0]), torch.tensor([10.0, 0.1])
    condition = torch.tensor([[11.0, 0.1]])  # standardised (1, 1)
    candidates = torch.tensor([[[21.0, 0.0], [1.0, 0.2], [11.0, 0.1]]])  # (2, 0), (0, 2), (1, 1)
    agreement = feature_agreement(candidates, condition, mean, std)  # [1, 3]
    torch.testing.assert_close(agreement, torch.tensor([[2 ** -0.5, 2 ** -0.5, 1.0]]))
    # unstandardised, the large first dimension would decide: cosine of (20, 0) with (10, 0.1) is ~1
    assert best_candidates(candidates[:, None], condition, mean, std).tolist() == [[2]]


def test_best_candidates_picks_per_sample_and_keeps_the_first_of_ties():
    condition = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ones, zeros = torch.ones(2), torch.zeros(2)
    cand = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]],
                         [[[0.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 1.0]]]])  # [T=2, S=2, K=2, D=2]
    assert best_candidates(cand, condition, zeros, ones).tolist() == [[1, 0], [0, 1]]


def test_take_kept_picks_the_indexed_candidate_of_each_sample():
    images = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # [T, S, K, ...]
    keep = torch.tensor([[0, 3, 1], [2, 2, 0]])
    kept = take_kept(images, keep)
    assert kept.shape == (2, 3, 5)
    for t in range(2):
        for s in range(3):
            np.testing.assert_array_equal(kept[t, s], images[t, s, keep[t, s]])


def test_one_candidate_is_the_plain_sampling_exactly(lea):
    features = torch.randn(NUM_TEST, FEATURE_DIM)
    plain = lea.generate_images(features, SamplingConfig(steps=3, num_samples=2), torch.Generator().manual_seed(7))
    lea.candidate_features = lambda images: pytest.fail("one candidate must not score any")
    one = lea.generate_images(features, SamplingConfig(steps=3, num_samples=2, candidates=1),
                              torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(one, plain)


def test_each_sample_is_its_best_candidate(lea):
    """With K candidates the kept image of every sample is, of the K images plain sampling draws
    for it with the same generator, the one whose features agree best with the condition."""
    features = torch.randn(NUM_TEST, FEATURE_DIM)
    samples, k = 2, 3
    lea.batch_size = samples * k  # one trial per generate call, as the K = 1 call below
    drawn = lea.generate_images(features, SamplingConfig(steps=3, num_samples=samples * k),
                                torch.Generator().manual_seed(7))  # [T, S*K, H, W, 3]
    drawn = drawn.reshape(NUM_TEST, samples, k, *drawn.shape[2:])  # [T, S, K, H, W, 3]
    kept = lea.generate_images(features, SamplingConfig(steps=3, num_samples=samples, candidates=k),
                               torch.Generator().manual_seed(7))  # [T, S, H, W, 3]
    assert kept.shape == (NUM_TEST, samples, *drawn.shape[3:])
    stats = lea.heads.stats
    cand = lea.image_features(drawn.reshape(-1, *drawn.shape[3:])).reshape(NUM_TEST, samples, k, -1)
    best = best_candidates(cand, features, stats["image_mean"], stats["image_std"])  # [T, S]
    expected = np.take_along_axis(drawn, best.numpy()[:, :, None, None, None, None], 2)[:, :, 0]
    np.testing.assert_array_equal(kept, expected)
    assert len(set(best.flatten().tolist())) > 1  # the choice is not always the first candidate


def test_candidates_need_fitted_heads(lea):
    lea.heads = None
    with pytest.raises(Exception, match="alignment heads"):
        lea.generate_images(torch.randn(2, FEATURE_DIM), SamplingConfig(steps=2, num_samples=1, candidates=2))


def test_candidates_below_one_is_a_config_error(tmp_path):
    config = tmp_path / "lea.yaml"
    config.write_text("KIND: lea\nSampling:\n  candidates: 0\n")
    with pytest.raises(ConfigError, match="Sampling.candidates expected >= 1, found 0"):
        load_config(config)
