"""bench/fmri_heldout.py: fMRI-stage settings scored on held-out training images, never the test set."""
import json
import sys
from pathlib import Path

import numpy as np

from datasets.simulate import GOD_DIR

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import fmri_heldout  # noqa: E402

TINY = ["Model.patch_size=4", "Model.embed_dim=32", "Model.num_heads=2", "Model.encoder_depth=1",
        "Model.decoder_embed_dim=32", "Model.decoder_num_heads=2", "Model.decoder_depth=1",
        "Train.batch_size=4", "Train.max_steps=3", "Train.warmup_steps=1"]


def test_every_trial_of_a_held_out_image_is_held_out():
    index = np.array([0, 1, 2, 1, 3, 0, 4])
    rows, held = fmri_heldout.trial_rows(index, np.array([1, 4]))
    assert held.tolist() == [1, 3, 6] and rows.tolist() == [0, 2, 4, 5]
    split = fmri_heldout.split_images(100, seed=1)
    assert len(split) == 20 and np.array_equal(split, fmri_heldout.split_images(100, seed=1))
    assert not np.array_equal(split, fmri_heldout.split_images(100, seed=2))


def test_runs_on_the_simulated_layout_and_reports_both_directions(sim_root, tmp_path, capsys):
    out = tmp_path / "heldout.json"
    sets = [f"Data.path={sim_root / GOD_DIR}", f"Features.cache_dir={tmp_path / 'cache'}", *TINY]
    argv = [a for s in sets for a in ("--set", s)] + ["--out", str(out)]
    result = fmri_heldout.main(argv)
    assert "wrote" not in capsys.readouterr().out   # no word of the deleted temporary run folders
    assert json.loads(out.read_text()) == result
    assert result["held_out_trials"] > 0 and result["training_trials"] > result["held_out_trials"]
    for name in ("lea_latent", "voxel_ridge"):
        scores = result[name]
        assert 0.0 <= scores["feature_pairwise_pcc"] <= 1.0
        assert -1.0 <= scores["encoding_pearson_mean"] <= 1.0
        readout = scores["attribute_readout"]
        assert set(readout) == {"shape", "palette", "orientation", "frequency", "layout", "mean"}
    # the voxel ridge reads the stimulus from the tiny brain's held-out trials well above chance
    assert result["voxel_ridge"]["feature_pairwise_pcc"] > 0.7
