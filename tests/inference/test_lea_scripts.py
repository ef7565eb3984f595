"""LEA_GOD.py / LEA_BOLD.py end to end on the tiny simulated tree with tiny random-weight checkpoints."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from datasets import load_subject
from datasets.simulate import BOLD_DIR, GOD_DIR
from tests.models.test_lea_pipeline import FEATURE_DIM, IMAGE_SIZE, tiny_configs, write_model_file
from inference import LEA
from inference.run_lea import main
from tests.paths import REPO

NUM_SAMPLES = 2
CASES = {  # dataset -> (script, data folder under the simulated root, subject)
    "GOD": ("LEA_GOD.py", GOD_DIR, "sbj_1"),
    "BOLD5000": ("LEA_BOLD.py", BOLD_DIR, "CSI1"),
}


def make_setup(root: Path, sim_root: Path, dataset: str) -> Path:
    """Checkpoints for one subject and a config pointing at them; returns the config path."""
    _, data_dir, subject = CASES[dataset]
    data = load_subject(dataset, sim_root / data_dir, subject)
    cfgs = tiny_configs(data.roi_patch)
    ckpt = root / "checkpoints"
    write_model_file(ckpt / "fmri" / subject / "fmri_autoencoder.pt", "fmri_autoencoder", cfgs["fmri_autoencoder"])
    write_model_file(ckpt / "tokenizer.pt", "tokenizer", cfgs["tokenizer"], seed=1)
    write_model_file(ckpt / "maskgit.pt", "maskgit", cfgs["maskgit"], seed=2)
    config = {
        "KIND": "lea", "NAME": f"test_{dataset}", "SEED": 1,
        "Data": {"dataset": dataset, "path": str(sim_root / data_dir), "subjects": [subject]},
        "Features": {"backend": "handcrafted", "dim": FEATURE_DIM, "normalize": True, "cache_dir": None},
        "Sampling": {"steps": 3, "num_samples": NUM_SAMPLES},
        "Checkpoints": {"fmri": str(ckpt / "fmri" / "{subject}" / "fmri_autoencoder.pt"),
                        "tokenizer": str(ckpt / "tokenizer.pt"), "maskgit": str(ckpt / "maskgit.pt"),
                        "align": str(ckpt / "align" / "{subject}" / "align.pt")},
        "Eval": {"bootstrap": 200},
        "BATCH_SIZE": 8, "OUT_DIR": str(root / "results"),
    }
    path = root / "lea.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href")]


def check_run_folder(run: Path, dataset: str, subject: str) -> None:
    data = load_subject(dataset, _data_root(run), subject)
    folder = run / subject
    for name in ("sample_image.png", "sample_fmri.png", "diagnostics.png", "metrics.json", "metrics.csv", "index.html",
                 "decoded_images.npy", "predicted_fmri.npy", "align.pt"):
        assert (folder / name).is_file(), name
    assert (run / "config.yaml").is_file() and (run / "index.html").is_file()
    t = len(data.test_fmri)
    decoded = np.load(folder / "decoded_images.npy")
    assert decoded.shape == (t, NUM_SAMPLES, IMAGE_SIZE, IMAGE_SIZE, 3) and decoded.dtype == np.uint8
    predicted = np.load(folder / "predicted_fmri.npy")
    assert predicted.shape == (t, data.num_voxels) and np.isfinite(predicted).all()
    assert len(list((folder / "images").glob("*_gt.png"))) == t
    assert len(list((folder / "images").glob("*_s*.png"))) == t * NUM_SAMPLES

    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["settings"]["restandardize"] is True
    assert "test-set statistics" in metrics["settings"]["restandardize_note"]
    assert set(metrics["checkpoints"]) == {"fmri", "tokenizer", "maskgit", "align"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", c["sha256"]) for c in metrics["checkpoints"].values())
    dec, enc = metrics["decoding"], metrics["encoding"]
    for name in ("pairwise_mse", "pairwise_pcc", "pairwise_ssim", "handcrafted_pairwise_pcc"):
        assert dec[name]["chance"] == 0.5 and 0.0 <= dec[name]["value"] <= 1.0, name
    for name in ("classifier_50way_top1", "pairwise_lpips", "fid"):
        assert dec[name]["value"] is None and dec[name]["skipped"], name
    assert dec["classifier_50way_top1"]["chance"] == pytest.approx(1 / 50)
    assert dec[f"handcrafted_{t}way_top1_pcc"]["chance"] == pytest.approx(1 / t)
    assert enc["encoding_pearson_mean"]["chance"] == 0.0
    assert enc[f"fmri_top1_of_{t}_pcc"]["chance"] == pytest.approx(1 / t)
    for roi in data.roi_names:
        assert f"encoding_pearson_{roi}" in enc
    assert enc["simulator_fraction_of_noise_ceiling"]["value"] is not None   # simulated data: ceiling known
    assert enc["simulator_noise_ceiling_mean_r"]["value"] > 0
    # ceiling from the single test trials, per ROI, with intervals; both modes; baselines
    assert 0 < enc["noise_ceiling_r"]["value"] <= 1 and enc["fraction_of_ceiling"]["value"] is not None
    for roi in data.roi_names:
        assert f"noise_ceiling_r_{roi}" in enc and f"fraction_of_ceiling_{roi}" in enc
    low, high = enc["encoding_pearson_mean"]["details"]["ci95"]
    assert low <= enc["encoding_pearson_mean"]["value"] <= high
    assert 0 <= dec["pairwise_mse"]["details"]["p_value"] <= 1 and "ci95" in dec["pairwise_mse"]["details"]
    assert set(metrics) >= {"decoding_leakage_free", "encoding_leakage_free", "baselines"}
    assert metrics["settings"]["headline_mode"].startswith("transductive")
    base = metrics["baselines"]
    for name in ("ridge_encoding_pearson_mean", "ridge_fraction_of_ceiling", "ridge_decoding_handcrafted_pairwise_pcc",
                 "retrieval_handcrafted_pairwise_pcc", "retrieval_pairwise_ssim"):
        assert base[name]["value"] is not None, name
    assert dec["pairwise_snr"]["chance"] == 0.5 and dec["stack_ssim"]["value"] is not None
    assert dec["fid_per_sample"]["skipped"] and dec["pairwise_lpips"]["skipped"]
    for name in ("encoding_roi.png", "identification_curve.png"):
        assert (folder / name).is_file(), name

    # simulated data: the semantic attribute accuracy leads, with its chance level and its ceiling
    assert list(dec)[0] == "sim_attribute_accuracy" and re.fullmatch(r"sim_category_\d+way_top1", list(dec)[1])
    assert dec["sim_attribute_accuracy"]["chance"] == pytest.approx(np.mean([1 / 6, 1 / 6, 1 / 4, 1 / 2, 1 / 4]))
    assert 0.0 <= dec["sim_attribute_accuracy"]["details"]["stimuli_ceiling"] <= 1.0
    # ... in the other mode's decoding section too (its own decoded images, so its own values)
    other = metrics["decoding_leakage_free"]
    assert list(other)[:2] == list(dec)[:2] and other["sim_attribute_accuracy"]["value"] is not None
    diag = metrics["diagnostics"]
    for stage in ("tokenizer_round_trip", "decoded_from_true_features", "retrieval_baseline", "lea_decoded"):
        assert 0.0 <= diag[f"{stage}/handcrafted_pairwise_pcc"]["value"] <= 1.0, stage
        assert diag[f"{stage}/sim_attribute_accuracy"]["value"] is not None, stage
    ceiling = dec["sim_attribute_accuracy"]["details"]["stimuli_ceiling"]
    assert diag["stimuli/sim_attribute_accuracy"]["value"] == ceiling
    assert diag["lea_decoded/sample_diversity"]["value"] > 0          # two samples per trial
    assert "retrieval_baseline/sample_diversity" not in diag          # one image per trial

    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    sections = [s for s in ("decoding", "encoding", "decoding_leakage_free", "encoding_leakage_free", "baselines",
                            "diagnostics")]
    assert {(r["section"], r["name"]) for r in rows} == {(s, n) for s in sections for n in metrics[s]}
    assert "decoding stage by stage" in (folder / "index.html").read_text()
    for page in (folder / "index.html", run / "index.html"):
        parser = _Links()
        parser.feed(page.read_text())
        assert any(link.endswith("sample_image.png") for link in parser.links)
        for link in parser.links:
            assert (page.parent / link).exists(), f"{page}: broken link {link}"


def _data_root(run: Path) -> str:
    return yaml.safe_load((run / "config.yaml").read_text())["Data"]["path"]


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "results").iterdir() if p.is_dir())


@pytest.mark.slow
@pytest.mark.parametrize("dataset", list(CASES))
def test_script_end_to_end(dataset, sim_root, tmp_path):
    script, _, subject = CASES[dataset]
    config = make_setup(tmp_path, sim_root, dataset)
    result = subprocess.run([sys.executable, script, "--config", str(config), "--device", "cpu",
                             "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "fitting them on the" in result.stdout     # alignment heads were missing: fitted and saved
    (run,) = run_dirs(tmp_path)
    assert f"results: {run}" in result.stdout
    check_run_folder(run, dataset, subject)
    reopened = LEA.from_run(run, device="cpu")                  # the Python API reproduces the script's output
    assert reopened.heads_source == run / subject / "align.pt"
    assert np.array_equal(reopened.decode(reopened.data.test_fmri), np.load(run / subject / "decoded_images.npy"))

    # a second run with the saved heads writes a new folder and leaves the first one alone
    first = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert main(["--config", str(config), "--align", str(run / subject / "align.pt"),
                 "--set", "Align.restandardize=false", "--set", "Data.include_test_repeats=true",
                 "--set", "Eval.both_modes=false", "--set", "Eval.bootstrap=50", "--candidates", "2", "--no-progress"],
                dataset=dataset) == 0
    runs = run_dirs(tmp_path)
    assert len(runs) == 2 and runs[0] == run
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == first
    second = json.loads((runs[1] / subject / "metrics.json").read_text())
    assert second["settings"]["restandardize"] is False
    first_settings = json.loads((run / subject / "metrics.json").read_text())["settings"]
    assert first_settings["candidates"] == 1 and first_settings["candidates_note"].startswith("off")
    assert second["settings"]["candidates"] == 2 and "best of 2" in second["settings"]["candidates_note"]
    assert second["settings"]["headline_mode"].startswith("leakage_free") and "encoding_transductive" not in second
    single = second["single_trials"]                       # Data.include_test_repeats: every single trial scored
    assert 0.0 <= single["single_trial_predicted_handcrafted_pairwise_pcc"]["value"] <= 1.0
    # the tiny random networks can predict the same fMRI for every image without re-standardisation
    defined = second["encoding"]["encoding_pearson_mean"]["value"] is not None
    assert (single["single_trial_encoding_pearson_mean"]["value"] is not None) == defined
    assert second["checkpoints"]["align"]["path"] == str(run / subject / "align.pt")
    assert not (runs[1] / subject / "align.pt").exists()


def test_missing_data_folder(tmp_path, sim_root, capsys):
    config = make_setup(tmp_path, sim_root, "GOD")
    assert main(["--config", str(config), "--set", f"Data.path={tmp_path / 'nowhere'}"], dataset="GOD") == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and "data folder not found" in err


def test_missing_subject_file(tmp_path, sim_root, god_copy, capsys):
    config = make_setup(tmp_path, sim_root, "GOD")
    (god_copy / "sbj_1.npz").unlink()
    assert main(["--config", str(config), "--set", f"Data.path={god_copy}", "--no-progress"], dataset="GOD") == 2
    assert "sbj_1.npz" in capsys.readouterr().err


def test_missing_checkpoint_names_file_and_train_command(tmp_path, sim_root, capsys):
    config = make_setup(tmp_path, sim_root, "GOD")
    missing = tmp_path / "nope" / "maskgit.pt"
    assert main(["--config", str(config), "--maskgit-ckpt", str(missing)], dataset="GOD") == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "python train.py maskgit --config configs/MaskGIT_GOD.yaml" in err
    missing_fmri = tmp_path / "nope" / "{subject}.pt"
    assert main(["--config", str(config), "--fmri-ckpt", str(missing_fmri)], dataset="GOD") == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope" / "sbj_1.pt") in err
    assert "python train.py fmri --config configs/fMRI_TransAE_GOD.yaml --set 'Data.subjects=[sbj_1]'" in err
    assert not (tmp_path / "results").exists()   # nothing was written


def test_checkpoint_of_another_voxel_count(tmp_path, sim_root, capsys):
    config = make_setup(tmp_path, sim_root, "GOD")
    data = load_subject("GOD", sim_root / GOD_DIR, "sbj_1")
    wrong = list(data.roi_patch)
    wrong[0] += 3
    other = write_model_file(tmp_path / "other.pt", "fmri_autoencoder", tiny_configs(wrong)["fmri_autoencoder"])
    assert main(["--config", str(config), "--fmri-ckpt", str(other), "--no-progress"], dataset="GOD") == 2
    err = capsys.readouterr().err
    assert f"{sum(wrong)} voxels" in err and f"sbj_1 has {data.num_voxels} voxels" in err and str(other) in err


def test_unknown_subject_and_wrong_dataset(tmp_path, sim_root, capsys):
    config = make_setup(tmp_path, sim_root, "GOD")
    assert main(["--config", str(config), "--subject", "CSI1"], dataset="GOD") == 2
    assert "'CSI1'" in capsys.readouterr().err
    assert main(["--config", str(config)], dataset="BOLD5000") == 2
    assert "LEA_BOLD.py" in capsys.readouterr().err
