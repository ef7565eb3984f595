"""YAML -> typed config: paper configs load, errors name the key and the file."""
from pathlib import Path

import pytest

import models  # noqa: F401  (registers the networks' Model schemas)
from utils.config import (AlignConfig, LEAConfig, apply_overrides, config_from_dict, load_config,
                          read_yaml, save_config, to_dict)
from utils.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_lea_config_loads_with_paper_values():
    cfg = load_config(CONFIGS / "LEA_GOD.yaml")
    assert isinstance(cfg, LEAConfig)
    assert cfg.data.dataset == "GOD" and cfg.data.subjects[0] == "sbj_1"
    assert cfg.align == AlignConfig(decode_alpha=500.0, encode_alpha=500.0, decode_intercept=False,
                                    encode_intercept=True, restandardize=True)
    assert cfg.sampling.steps == 11 and cfg.sampling.choice_temperature == 4.5
    bold = load_config(CONFIGS / "LEA_BOLD.yaml")
    assert bold.data.dataset == "BOLD5000" and bold.data.subjects == ["CSI1", "CSI2", "CSI3", "CSI4"]


@pytest.mark.parametrize("name,kind", [("fMRI_TransAE_GOD.yaml", "fmri_autoencoder"),
                                       ("fMRI_TransAE_BOLD.yaml", "fmri_autoencoder"),
                                       ("MaskGIT_AE.yaml", "tokenizer"),
                                       ("MaskGIT_GOD.yaml", "maskgit"), ("MaskGIT_BOLD.yaml", "maskgit")])
def test_paper_stage_configs_load(name, kind):
    cfg = load_config(CONFIGS / name)
    assert cfg.kind == kind
    assert cfg.model is not None


def test_paper_hyper_parameters():
    god = load_config(CONFIGS / "fMRI_TransAE_GOD.yaml")
    assert (god.model.patch_size, god.model.embed_dim, god.model.encoder_depth) == (32, 1024, 24)
    assert (god.model.decoder_embed_dim, god.model.decoder_depth, god.model.mlp_ratio) == (512, 8, 1.0)
    assert god.train.lr == 5e-5 and god.train.betas == (0.9, 0.95) and god.train.warmup_steps == 8000
    assert god.data.fmri_drop_rate == 0.25 and god.loss.cls_weight == 1.0
    bold = load_config(CONFIGS / "fMRI_TransAE_BOLD.yaml")
    assert bold.train.lr == 5e-6 and bold.train.max_steps == 120000
    mg = load_config(CONFIGS / "MaskGIT_GOD.yaml")
    assert (mg.model.depth, mg.model.embed_dim, mg.model.num_heads) == (24, 768, 16)
    assert mg.loss.label_smoothing == 0.1 and mg.train.warmup_steps == 20000
    ae = load_config(CONFIGS / "MaskGIT_AE.yaml")
    assert tuple(ae.model.ch_mult) == (1, 1, 2, 2, 4) and ae.model.num_codebook == 1024


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "KIND: lea\nAlign:\n  decode_alfa: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "decode_alfa" in str(e.value) and str(p) in str(e.value)


def test_unknown_model_key(tmp_path):
    p = write(tmp_path, "KIND: fmri_autoencoder\nModel:\n  embed_dims: 8\n")
    with pytest.raises(ConfigError, match="embed_dims"):
        load_config(p)


@pytest.mark.parametrize("text,needle", [
    ("KIND: lea\nAlign:\n  decode_alpha: big\n", "Align.decode_alpha"),
    ("KIND: lea\nSampling:\n  steps: 1.5\n", "Sampling.steps"),
    ("KIND: lea\nAlign:\n  restandardize: 1\n", "Align.restandardize"),
    ("KIND: lea\nData:\n  dataset: NSD\n", "Data.dataset"),
    ("KIND: lea\nData:\n  subjects: []\n", "Data.subjects"),
    ("KIND: nonsense\n", "KIND"),
])
def test_wrong_types_and_choices(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert needle in str(e.value) and str(p) in str(e.value)


def test_overrides_are_typed(tmp_path):
    p = write(tmp_path, "KIND: lea\n")
    cfg = load_config(p, ["Sampling.steps=4", "Align.restandardize=false", "Data.subjects=[sbj_2]"])
    assert cfg.sampling.steps == 4 and cfg.align.restandardize is False and cfg.data.subjects == ["sbj_2"]
    assert load_config(p, ["Align.decode_alpha=2e-3"]).align.decode_alpha == 2e-3  # YAML 1.1 leaves it a string
    with pytest.raises(ConfigError, match="Sampling.steps"):
        load_config(p, ["Sampling.steps=four"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["Sampling.steps"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(write(tmp_path, "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="mapping"):
        read_yaml(write(tmp_path, "- 1\n- 2\n"))


def test_save_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "LEA_BOLD.yaml", ["Sampling.num_samples=2"])
    out = save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(out)
    assert to_dict(again) == to_dict(cfg)
    assert config_from_dict(to_dict(cfg)) == cfg
