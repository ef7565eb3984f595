"""Retrieval of the nearest training image by features."""
import numpy as np
import pytest
import torch

from evaluation.retrieval import nearest_training_images, retrieve_images, similarity_to_training
from utils.errors import ConfigError, DataError


def test_nearest_by_pcc_and_cosine_differ_where_they_should():
    candidates = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 10.5], [3.0, 2.0, 1.0]])
    query = torch.tensor([[1.1, 2.0, 2.9], [5.0, 5.0, 5.0 + 1e-3]])
    # pcc ignores the offset: [10, 10, 10.5] is an increasing vector like the first query
    assert nearest_training_images(query, candidates, k=2).tolist() == [[0, 1], [1, 0]]
    # cosine: the near-constant query is closest to the near-constant candidate
    assert nearest_training_images(query[1:], candidates, metric="cosine")[0, 0] == 1
    sims = similarity_to_training(query, candidates)
    assert sims.shape == (2, 3) and sims[0, 2] < 0 < sims[0, 0] <= 1


def test_retrieve_images_on_simulated_stimuli(sim_root):
    with np.load(sim_root / "Kamitani" / "npz" / "images_256.npz") as f:
        train = f["train_images"]
    feats = torch.from_numpy(train.reshape(len(train), -1).astype(np.float64))  # pixels as features
    noisy = feats[[4, 0, 7]] + torch.randn(3, feats.shape[1], generator=torch.Generator().manual_seed(0))
    idx, images = retrieve_images(noisy, feats, train)
    assert idx[:, 0].tolist() == [4, 0, 7]
    assert images.shape == (3, 1, *train.shape[1:]) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0, 0], train[4])


def test_ties_go_to_the_lower_index_and_errors_name_the_problem():
    candidates = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert nearest_training_images(torch.tensor([[0.0, 2.0]]), candidates, k=3).tolist() == [[0, 1, 2]]
    with pytest.raises(ConfigError, match="retrieval k"):
        nearest_training_images(candidates, candidates, k=4)
    with pytest.raises(ConfigError, match="retrieval metric"):
        nearest_training_images(candidates, candidates, metric="l2")
    with pytest.raises(DataError, match="retrieval features"):
        nearest_training_images(torch.zeros(2, 3), candidates)
    with pytest.raises(DataError, match="one image per candidate"):
        retrieve_images(candidates, candidates, np.zeros((2, 4, 4, 3), np.uint8))
