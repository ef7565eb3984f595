"""bench/eval_image_side.py --probe: how much of each attribute the MaskGIT condition carries."""
import sys
from pathlib import Path

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
