"""LEA_GOD.py with the release's checkpoint files and a published tokenizer, and every consistency
refusal (decoder vs tokenizer and features; alignment heads vs fMRI checkpoint and features)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from datasets import load_subject
from datasets.simulate import GOD_DIR
from inference.run_lea import main
from models.alignment import AlignmentHeads
from models.fmri_autoencoder import FMRIAutoencoder
from models.image_features import HANDCRAFTED_REVISION
from models.maskgit import MaskGITTransformer
from models.provenance import current_features
from models.vqgan import VQGAN
from tests.inference.test_lea_scripts import make_setup
from tests.models.test_lea_pipeline import tiny_configs
from utils.config import to_dict
from utils.io import atomic_torch_save, file_sha256

SUBJECT = "sbj_1"
FAST = ["--num-samples", "1", "--steps", "2", "--no-progress", "--device", "cpu"]


def stage_yaml(path: Path, kind: str, model_config) -> Path:
    """A stage config whose Model section describes a release file (which carries no config)."""
    model = {k: v for k, v in to_dict(model_config).items() if k != "roi_patch"}
    path.write_text(yaml.safe_dump({"KIND": kind, "Model": model}))
    return path


def release_files(root: Path, sim_root: Path) -> dict[str, Path]:
    """The release's layout: DataParallel-wrapped {'model': ...} files, a plain tokenizer state dict."""
    data = load_subject("GOD", sim_root / GOD_DIR, SUBJECT)
    cfgs = tiny_configs(data.roi_patch)
    torch.manual_seed(5)
    fmri, maskgit, vqgan = (FMRIAutoencoder(cfgs["fmri_autoencoder"]), MaskGITTransformer(cfgs["maskgit"]),
                            VQGAN(cfgs["tokenizer"]))
    fmri_file = root / "checkpoints" / "GOD_sbj1" / "checkpoint.pth"
    atomic_torch_save(fmri_file, {"model": {f"module.transformer.{k}": v for k, v in fmri.state_dict().items()}})
    decoder = {f"module.transformer.{k}": v for k, v in maskgit.state_dict().items()}
    decoder.update({f"module.vqgan.{k}": v for k, v in vqgan.state_dict().items()})
    decoder_file = atomic_torch_save(root / "checkpoints" / "ImageDecoder_MaskGIT" / "checkpoint.pth",
                                     {"model": decoder})
    tokenizer = atomic_torch_save(root / "pretrains" / "MaskGIT_ImageNet256_checkpoint.pth", vqgan.state_dict())
    return {"fmri": fmri_file, "maskgit": decoder_file, "tokenizer": tokenizer,
            "fmri_config": stage_yaml(root / "fmri.yaml", "fmri_autoencoder", cfgs["fmri_autoencoder"]),
            "maskgit_config": stage_yaml(root / "maskgit.yaml", "maskgit", cfgs["maskgit"])}


def release_args(files: dict[str, Path]) -> list[str]:
    return ["--fmri-ckpt", str(files["fmri"]), "--maskgit-ckpt", str(files["maskgit"]),
            "--tokenizer-ckpt", str(files["tokenizer"]),
            "--set", f"Checkpoints.fmri_config={files['fmri_config']}",
            "--set", f"Checkpoints.maskgit_config={files['maskgit_config']}"]


def only_run(root: Path) -> Path:
    (run,) = sorted(p for p in (root / "results").iterdir() if p.is_dir())
    return run


@pytest.mark.slow
def test_release_checkpoints_and_published_tokenizer_run(tmp_path, sim_root):
    config = make_setup(tmp_path, sim_root, "GOD")
    files = release_files(tmp_path, sim_root)
    assert main(["--config", str(config), *release_args(files), *FAST], dataset="GOD") == 0
    metrics = json.loads((only_run(tmp_path) / SUBJECT / "metrics.json").read_text())
    ckpts = metrics["checkpoints"]
    assert "release fMRI checkpoint" in ckpts["fmri"]["file"]
    assert "release decoder checkpoint" in ckpts["maskgit"]["file"]
    assert ckpts["maskgit"]["own_vqgan"] == "identical to the tokenizer used"
    assert "published tokenizer" in ckpts["tokenizer"]["file"]
    status = {(c["name"], c["status"]) for c in metrics["settings"]["consistency"]}
    assert status == {("tokenizer", "unrecorded"), ("features", "unrecorded")}    # heads fitted here: nothing to check


def test_release_files_that_do_not_fit_list_their_keys(tmp_path, sim_root, capsys):
    config = make_setup(tmp_path, sim_root, "GOD")
    files = release_files(tmp_path, sim_root)
    state = torch.load(files["fmri"], weights_only=True)["model"]
    state["module.transformer.pred.weight"] = torch.zeros(3, 3)
    state["module.head.extra"] = torch.zeros(2)
    bad = atomic_torch_save(tmp_path / "bad_fmri.pth", {"model": state})
    assert main(["--config", str(config), *release_args(files), "--fmri-ckpt", str(bad), *FAST], dataset="GOD") == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "unexpected  head.extra  checkpoint [2]" in err
    state.pop("module.head.extra")
    atomic_torch_save(bad, {"model": state})
    assert main(["--config", str(config), *release_args(files), "--fmri-ckpt", str(bad), *FAST], dataset="GOD") == 2
    err = capsys.readouterr().err
    assert "shape       pred.weight  checkpoint [3, 3] vs model" in err and str(files["fmri_config"]) in err


def decoder_with_records(root: Path, tokenizer: Path, features: dict, folder: str = "recorded") -> Path:
    """Our maskgit.pt as train.py writes it: records the tokenizer's sha256 and the features."""
    payload = torch.load(root / "checkpoints" / "maskgit.pt", weights_only=True)
    payload.update(tokenizer={"path": str(tokenizer), "sha256": file_sha256(tokenizer)}, features=features)
    return atomic_torch_save(root / "checkpoints" / folder / "maskgit.pt", payload)


def test_decoder_refuses_another_tokenizer_or_features_unless_accepted(tmp_path, sim_root, capsys):
    config = make_setup(tmp_path, sim_root, "GOD")
    features = yaml.safe_load(config.read_text())["Features"]
    tokenizer = tmp_path / "checkpoints" / "tokenizer.pt"
    other = atomic_torch_save(tmp_path / "other_tokenizer.pt",
                              {**torch.load(tokenizer, weights_only=True), "note": "retrained"})
    decoder = decoder_with_records(tmp_path, tokenizer, current_features(features))
    base = ["--config", str(config), "--maskgit-ckpt", str(decoder), *FAST]

    # a decoder conditioned on the handcrafted features of an earlier revision (its record has none)
    stale = decoder_with_records(tmp_path, tokenizer, features, folder="stale")
    assert main(["--config", str(config), "--maskgit-ckpt", str(stale), *FAST], dataset="GOD") == 2
    err = capsys.readouterr().err
    assert f"'revision': {HANDCRAFTED_REVISION}" in err and "'revision': None" in err, err

    assert main([*base, "--tokenizer-ckpt", str(other)], dataset="GOD") == 2
    err = capsys.readouterr().err
    assert file_sha256(tokenizer)[:12] in err and file_sha256(other)[:12] in err
    assert str(other) in err and "--accept-mismatch tokenizer" in err
    assert main([*base, "--set", "Features.normalize=false"], dataset="GOD") == 2
    err = capsys.readouterr().err
    assert "'normalize': True" in err and "'normalize': False" in err and "--accept-mismatch features" in err
    refused = [p for p in (tmp_path / "results").iterdir()]  # started folders are marked, hold no results
    assert len(refused) == 3 and all((p / "INCOMPLETE.txt").is_file() and not (p / SUBJECT).exists()
                                     for p in refused)
    for p in refused:
        shutil.rmtree(p)

    assert main([*base, "--tokenizer-ckpt", str(other), "--accept-mismatch", "tokenizer"], dataset="GOD") == 0
    run = only_run(tmp_path)
    metrics = json.loads((run / SUBJECT / "metrics.json").read_text())
    tok = next(c for c in metrics["settings"]["consistency"] if c["name"] == "tokenizer")
    assert tok["status"] == "accepted mismatch" and metrics["settings"]["accepted_mismatches"] == ["tokenizer"]
    assert yaml.safe_load((run / "config.yaml").read_text())["Checkpoints"]["accept_mismatch"] == ["tokenizer"]
    assert {c["status"] for c in metrics["settings"]["consistency"] if c["name"] != "tokenizer"} == {"ok"}


@pytest.mark.slow
def test_alignment_heads_refused_for_another_fmri_checkpoint_or_features(tmp_path, sim_root, capsys):
    config = make_setup(tmp_path, sim_root, "GOD")
    assert main(["--config", str(config), *FAST], dataset="GOD") == 0     # fits and saves heads with provenance
    heads_file = only_run(tmp_path) / SUBJECT / "align.pt"
    fmri = tmp_path / "checkpoints" / "fmri" / SUBJECT / "fmri_autoencoder.pt"
    assert AlignmentHeads.load(heads_file).provenance["fmri_checkpoint"]["sha256"] == file_sha256(fmri)
    data = load_subject("GOD", sim_root / GOD_DIR, SUBJECT)
    torch.manual_seed(9)
    other_fmri = atomic_torch_save(tmp_path / "other_fmri.pt", {
        "model": FMRIAutoencoder(tiny_configs(data.roi_patch)["fmri_autoencoder"]).state_dict(),
        "kind": "fmri_autoencoder", "model_config": to_dict(tiny_configs(data.roi_patch)["fmri_autoencoder"])})
    base = ["--config", str(config), "--align", str(heads_file), *FAST]

    assert main([*base, "--fmri-ckpt", str(other_fmri)], dataset="GOD") == 2
    err = capsys.readouterr().err
    assert str(heads_file) in err and str(other_fmri) in err and file_sha256(fmri)[:12] in err
    assert "refit the heads" in err and "--accept-mismatch align" in err
    assert main([*base, "--set", "Features.dim=12"], dataset="GOD") == 2
    assert "'dim': 16" in capsys.readouterr().err

    unrecorded = AlignmentHeads.load(heads_file)
    unrecorded.provenance = {}
    old = unrecorded.save(tmp_path / "old_align.pt")
    assert main(["--config", str(config), "--align", str(old), *FAST], dataset="GOD") == 2
    assert "recorded: nothing" in capsys.readouterr().err

    assert main([*base, "--fmri-ckpt", str(other_fmri), "--accept-mismatch", "align"], dataset="GOD") == 0
    runs = sorted(p for p in (tmp_path / "results").iterdir() if p.is_dir())
    metrics = json.loads((runs[-1] / SUBJECT / "metrics.json").read_text())
    assert any(c["name"] == "align" and c["status"] == "accepted mismatch" for c in metrics["settings"]["consistency"])
