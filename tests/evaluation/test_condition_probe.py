"""bench/eval_image_side.py: how much of each attribute the MaskGIT condition carries (--probe), and
the attribute accuracy of each scored column."""
import sys
from pathlib import Path

import numpy as np

import models  # noqa: F401
from datasets import load_subject
from datasets.simulate import GOD_DIR
from models.image_features import build_image_features, features_of

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from eval_image_side import condition_probe  # noqa: E402


def test_probe_reads_palette_and_reports_recorded_data_as_skipped(sim_root, tmp_path):
    data = load_subject("GOD", sim_root / GOD_DIR, "sbj_1")
    extractor = build_image_features("handcrafted", dim=128, normalize=True)
    train, test = features_of(extractor, data.train_images), features_of(extractor, data.test_images)
    probe = condition_probe(data, str(sim_root / GOD_DIR), train, test)
    assert set(probe) == {"shape", "palette", "orientation", "frequency", "layout"}
    assert probe["palette"]["accuracy"] >= 0.8 > 3 * probe["palette"]["chance"]   # colour is in the features
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in probe.values())
    assert "skipped" in condition_probe(data, str(tmp_path), train, test)          # no ground truth there


def test_attribute_accuracy_scores_each_column_against_the_chosen_stimuli(sim_root, tmp_path):
    from eval_image_side import attribute_accuracy

    data = load_subject("GOD", sim_root / GOD_DIR, "sbj_1")
    index = np.arange(len(data.train_images))
    stimuli = data.train_images[:, None]                                    # [T, 1, H, W, 3]
    wrong = np.roll(data.train_images, 1, axis=0)[:, None].repeat(2, 1)     # every row shows another stimulus
    result = attribute_accuracy(data, str(sim_root / GOD_DIR), "train", index, {"stimuli": stimuli, "wrong": wrong})
    assert set(result) == {"stimuli", "wrong", "chance"}
    for column in ("stimuli", "wrong"):
        assert set(result[column]) == {"mean", "shape", "palette", "orientation", "frequency", "layout"}
    assert result["stimuli"]["palette"] >= 0.9                   # the classifier was fitted on these images
    assert result["stimuli"]["mean"] > result["wrong"]["mean"]   # shifted rows are scored against their own row
    assert result["chance"]["palette"] == 1 / 6
    test = attribute_accuracy(data, str(sim_root / GOD_DIR), "test", np.arange(len(data.test_images)),
                              {"stimuli": data.test_images[:, None]})
    assert test["stimuli"]["palette"] >= 0.8
    assert "skipped" in attribute_accuracy(data, str(tmp_path), "test", index, {"stimuli": stimuli})


def test_pool_images_are_scored_against_the_attributes_their_names_give(sim_root, tmp_path):
    from eval_image_side import attribute_accuracy, pool_sample

    from datasets.decoder_pool import write_pool

    pool = write_pool(sim_root, tmp_path / "pool", per_combination=1, progress=False)
    data = load_subject("GOD", sim_root / GOD_DIR, "sbj_1")
    images, truth = pool_sample(str(pool), 40, data.train_images.shape[1])
    assert images.shape == (40, *data.train_images.shape[1:]) and truth.shape == (40, 5)
    shuffled = np.roll(images, 1, axis=0)
    result = attribute_accuracy(data, str(sim_root / GOD_DIR), "pool", np.arange(40),
                                {"renders": images[:, None], "shifted": shuffled[:, None]}, truth)
    assert result["renders"]["palette"] >= 0.9                   # colour is easy for the classifier
    assert result["renders"]["mean"] > result["shifted"]["mean"]


def test_fmri_conditions_test_as_lea_decodes_train_out_of_fold_by_class(sim_root, tmp_path):
    """--condition fmri: the test trials get the fitted heads' predictions; the training images get
    out-of-fold predictions from folds of whole classes, each image paired with its own trials."""
    import torch
    from eval_image_side import fmri_conditions

    from inference.api import LEA
    from models.alignment import out_of_fold_decode
    from tests.inference.test_lea_scripts import make_setup
    from utils.config import load_config

    cfg = load_config(make_setup(tmp_path, sim_root, "GOD"), kind="lea")
    api = LEA.from_config(cfg, "sbj_1", "cpu")
    data, lea = api.data, api.pipeline
    test, how = fmri_conditions(cfg, "sbj_1", "test", np.arange(len(data.test_images)))
    torch.testing.assert_close(test, lea.heads.decode(lea.fmri_latents(data.test_fmri).double()).float())
    assert how == "heads fitted on all training trials"

    index = np.array([0, 5, len(data.train_images) - 1])
    train, how = fmri_conditions(cfg, "sbj_1", "train", index)
    assert how.endswith("folds of whole image classes")
    trial_image = torch.as_tensor(data.train_image_index)
    predicted = out_of_fold_decode(cfg.align, lea.fmri_latents(data.train_fmri).double(),
                                   api.features(data.train_images).double()[trial_image], cfg.align.cv_folds,
                                   groups=torch.as_tensor(data.train_labels)[trial_image])
    expected = torch.stack([predicted[trial_image == i].mean(0) for i in index]).float()
    torch.testing.assert_close(train, expected)
    assert not torch.allclose(train, predicted[torch.as_tensor(index)].float())   # trial order is not image order
