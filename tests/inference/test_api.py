"""The Python API (inference/api.py) on the tiny simulated tree with tiny random-weight checkpoints,
and the README's "Python API" example run as written (only its config path is pointed at them)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from inference import LEA
from models.alignment import AlignmentHeads
from tests.inference.test_lea_scripts import IMAGE_SIZE, NUM_SAMPLES, make_setup
from tests.paths import REPO
from utils.config import save_config
from utils.errors import CheckpointError, ConfigError

README_CONFIG = "configs/demo/LEA_GOD.yaml"
EXAMPLE_MAX_LINES = 10


@pytest.fixture(scope="module")
def setup(sim_root, tmp_path_factory) -> Path:
    return make_setup(tmp_path_factory.mktemp("api"), sim_root, "GOD")


@pytest.fixture(scope="module")
def lea(setup) -> LEA:
    return LEA.from_config(setup, device="cpu")


def test_from_config_fits_missing_heads_and_decodes_reproducibly(lea):
    assert lea.subject == "sbj_1" and lea.heads_source is None       # no heads file: fitted on training trials
    fmri = lea.data.test_fmri[:3]
    images = lea.decode(fmri, steps=2)
    assert images.shape == (3, NUM_SAMPLES, IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.uint8
    assert np.array_equal(lea.decode(fmri, steps=2), images)
    assert not np.array_equal(lea.decode(fmri, steps=2, seed=lea.config.seed + 1), images)
    assert lea.decode(fmri, num_samples=1, steps=2).shape[1] == 1
    assert np.array_equal(lea.decode(fmri, steps=2, candidates=1), images)  # the config's single sample
    best = lea.decode(fmri, steps=2, candidates=3)                          # best of 3 (models/rerank.py)
    assert best.shape == images.shape and not np.array_equal(best, images)
    with pytest.raises(ConfigError, match="candidates"):
        lea.decode(fmri, candidates=0)


def test_encode_gives_voxels_in_the_subjects_layout(lea):
    fmri = lea.encode(lea.data.test_images[:4])
    assert fmri.shape == (4, lea.data.num_voxels) and fmri.dtype == np.float32 and np.isfinite(fmri).all()


def test_evaluate_scores_the_test_set_as_the_scripts_do(lea, tmp_path):
    metrics = lea.evaluate(charts_to=tmp_path / "charts")
    decoding = {m.name: m for m in metrics["decoding"]}
    encoding = {m.name: m for m in metrics["encoding"]}
    assert 0.0 <= decoding["pairwise_ssim"].value <= 1.0 and decoding["pairwise_ssim"].chance == 0.5
    semantic = [m for m in metrics["decoding"] if m.name.startswith("classifier_")]
    assert semantic and all(m.value is None and "ViT-H/14" in m.skipped for m in semantic)
    # simulated data: the semantic attribute accuracy leads the decoding sections, as in the scripts
    for section in ("decoding", "decoding_leakage_free"):
        assert metrics[section][0].name == "sim_attribute_accuracy" and metrics[section][0].value is not None
    assert encoding["encoding_pearson_mean"].chance == 0.0
    assert any(p.suffix == ".png" for p in (tmp_path / "charts").iterdir())


def test_from_run_reopens_a_results_folder_with_its_heads(lea, tmp_path):
    run = tmp_path / "run"
    (run / lea.subject).mkdir(parents=True)
    save_config(lea.config, run / "config.yaml")
    heads = lea.heads.save(run / lea.subject / "align.pt")
    again = LEA.from_run(run, device="cpu")
    assert again.heads_source == heads
    fmri = lea.data.test_fmri[:2]
    assert np.array_equal(again.decode(fmri, steps=2), lea.decode(fmri, steps=2))
    with pytest.raises(ConfigError, match="config.yaml"):
        LEA.from_run(tmp_path, device="cpu")


def test_networks_load_from_hub_style_folders(lea, setup, tmp_path):
    folders = [f"Checkpoints.{key}={network.save_pretrained(tmp_path / key)}"
               for key, network in (("fmri", lea.pipeline.fmri_ae), ("tokenizer", lea.pipeline.tokenizer),
                                    ("maskgit", lea.pipeline.maskgit))]
    # heads are tied to the fMRI weights they were fitted on (the folder's sha256 is not the .pt file's): refit
    from_folders = LEA.from_config(setup, device="cpu", overrides=[*folders, f"Checkpoints.align={tmp_path / 'a.pt'}"])
    assert from_folders.heads_source is None and all(r["sha256"] for r in from_folders.records.values())
    fmri = lea.data.test_fmri[:2]
    assert np.array_equal(from_folders.decode(fmri, steps=2), lea.decode(fmri, steps=2))
    reloaded = AlignmentHeads.from_pretrained(lea.heads.save_pretrained(tmp_path / "heads"))
    assert reloaded.describe() == AlignmentHeads.load(lea.heads.save(tmp_path / "heads.pt")).describe()


def test_clear_errors_for_missing_weights_and_ambiguous_subjects(setup, tmp_path):
    with pytest.raises(CheckpointError, match="Checkpoints.maskgit"):
        LEA.from_config(setup, device="cpu", overrides=[f"Checkpoints.maskgit={tmp_path / 'none.pt'}"])
    with pytest.raises(ConfigError, match="Data.subjects"):
        LEA.from_config(setup, device="cpu", overrides=["Data.subjects=[sbj_1,sbj_2]"])


def readme_example() -> str:
    """The first python block of the README's 'Python API' section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs(setup, capsys):
    code = readme_example()
    assert len(code.strip().splitlines()) <= EXAMPLE_MAX_LINES and README_CONFIG in code
    subject = yaml.safe_load(setup.read_text())["Data"]["subjects"][0]
    namespace: dict = {}
    exec(compile(code.replace(README_CONFIG, str(setup)).replace('"sbj_1"', repr(subject)), "README.md", "exec"),
         namespace)
    images, predicted = namespace["images"], namespace["predicted"]
    assert images.ndim == 5 and images.dtype == np.uint8
    assert predicted.shape[1] == namespace["lea"].data.num_voxels
    assert re.search(r"encoding r -?[0-9.]+\n", capsys.readouterr().out)
