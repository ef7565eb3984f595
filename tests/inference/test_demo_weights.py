"""Manifests of packaged demo image-side weights: written with sha256 and commands, checked before use."""
import json
import shutil

import pytest
import torch

from inference.demo_weights import MANIFEST_NAME, verify_shipped, write_manifest
from models.checkpoints import safe_torch_load
from tests.paths import REPO
from utils.errors import CheckpointError


def training_stub(run_root, observe):
    """Stands in for train.py only: calls `observe()`, then writes a final file as a run would."""
    from inference.demo import FINAL_FILES

    def fake_train_stage(stage, config, overrides, log, progress=True):
        observe()
        final = run_root / stage / FINAL_FILES[stage]
        final.parent.mkdir(parents=True)
        final.write_bytes(b"weights")
        return final
    return fake_train_stage


def test_a_changed_file_is_refused(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"weights")
    config = tmp_path / "a.yaml"
    config.write_text("KIND: tokenizer\n")
    write_manifest(tmp_path, {"a.pt": {"command": "python train.py tokenizer", "config": str(config)}}, note="test")
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]["a.pt"]["bytes"] == 7
    assert verify_shipped(tmp_path / "a.pt")
    (tmp_path / "a.pt").write_bytes(b"changed")
    with pytest.raises(CheckpointError, match="sha256"):
        verify_shipped(tmp_path / "a.pt")
    shutil.copyfile(tmp_path / "a.pt", tmp_path / "b.pt")
    assert not verify_shipped(tmp_path / "b.pt")  # not listed: nothing to check


# ---------------------------------------------------------------------------
# The shipped files themselves
# ---------------------------------------------------------------------------

def shipped_manifest():
    from inference.demo_weights import SHIPPED_DIR, read_manifest

    return SHIPPED_DIR, read_manifest(SHIPPED_DIR)


def test_shipped_weights_match_their_manifest_and_stay_small():
    from inference.demo_weights import MAX_TOTAL_BYTES, STAGES, stage_data_command
    from utils.io import file_sha256

    folder, manifest = shipped_manifest()
    assert sorted(manifest["files"]) == sorted(name for _, _, name in STAGES)
    total = 0
    for name, record in manifest["files"].items():
        assert verify_shipped(folder / name)             # sha256 checked against the manifest
        assert (folder / name).stat().st_size == record["bytes"]
        total += record["bytes"]
        # trained from the committed config as it is now (a later edit must retrain and re-ship)
        assert file_sha256(record["config"]) == record["config_sha256"], record["config"]
        assert record["command"].startswith(f"python train.py {name.split('.')[0]} --config {record['config']}")
        # and says how the images its config trains on are made (a decoder pool named there included)
        assert record["data"] == stage_data_command(name.split(".")[0]), name
    assert total == manifest["total_bytes"] <= MAX_TOTAL_BYTES


def test_shipped_weights_load_with_the_committed_demo_configs():
    import models  # noqa: F401
    from models.lea import load_trained_network
    from utils.config import load_config, to_dict

    folder, manifest = shipped_manifest()
    for name, record in manifest["files"].items():
        stage = name.split(".")[0]
        network = load_trained_network(stage, folder / name)
        committed = load_config(record["config"], kind=stage)
        assert to_dict(network.config) == to_dict(committed.model)
    from models.provenance import decoder_checks
    from utils.io import file_sha256

    decoder = safe_torch_load(folder / "maskgit.pt")
    for lea in ("configs/demo/LEA_GOD.yaml", "configs/demo/LEA_BOLD.yaml"):
        cfg = load_config(lea)
        assert (cfg.checkpoints.tokenizer, cfg.checkpoints.maskgit) == (str(folder / "tokenizer.pt"),
                                                                        str(folder / "maskgit.pt"))
        # conditioned on these very features (revision included) and tokens of the shipped tokenizer
        checks = decoder_checks(decoder, folder / "maskgit.pt", folder / "tokenizer.pt",
                                file_sha256(folder / "tokenizer.pt"), to_dict(cfg.features))
        assert [c.status for c in checks] == ["ok", "ok"], [c.as_dict() for c in checks]


def test_demo_refuses_an_fmri_autoencoder_tied_to_other_features(tmp_path):
    import torch

    from inference.demo import check_fmri_features
    from models.provenance import current_features

    features = {"backend": "handcrafted", "dim": 128, "normalize": True, "cache_dir": None}
    tied = {"kind": "fmri_autoencoder", "config": {"Loss": {"cls_weight": 1000.0}}}
    torch.save({**tied, "features": current_features(features)}, tmp_path / "current.pt")
    check_fmri_features(tmp_path / "current.pt", features)
    torch.save(tied, tmp_path / "old.pt")                  # written before features had revisions
    with pytest.raises(CheckpointError, match="mv checkpoints/demo checkpoints/demo_old"):
        check_fmri_features(tmp_path / "old.pt", features)
    torch.save({**tied, "features": current_features({**features, "dim": 64})}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="'dim': 64"):
        check_fmri_features(tmp_path / "other.pt", features)
    torch.save({**tied, "config": {"Loss": {"cls_weight": 0.0}}}, tmp_path / "untied.pt")
    check_fmri_features(tmp_path / "untied.pt", features)  # its latent is not tied to features
    torch.save({**tied, "config": {"Loss": {"cls_weight": 1000.0, "mask_ratio": 0.75}}}, tmp_path / "masked.pt")
    check_fmri_features(tmp_path / "masked.pt", features)  # masked-brain pretraining ties nothing either


def test_a_reused_demo_fmri_autoencoder_trained_otherwise_is_named_with_its_settings(tmp_path):
    import torch
    import yaml

    from inference.demo import config_drift

    config = tmp_path / "fmri.yaml"
    config.write_text(yaml.safe_dump({"KIND": "fmri_autoencoder", "Train": {"max_steps": 2400, "out_dir": "a"},
                                      "Data": {"subjects": ["sbj_1"]}}))
    trained = {"KIND": "fmri_autoencoder", "Train": {"max_steps": 2400, "out_dir": "b", "lr": 0.003},
               "Data": {"subjects": ["sbj_2"]}}
    torch.save({"kind": "fmri_autoencoder", "config": trained}, tmp_path / "same.pt")
    # where the run wrote and settings the file does not spell out are not drift; the override is applied
    assert config_drift(tmp_path / "same.pt", str(config), ["Data.subjects=[sbj_2]"]) == []
    torch.save({"kind": "fmri_autoencoder", "config": {**trained, "Train": {"max_steps": 600}}}, tmp_path / "old.pt")
    assert config_drift(tmp_path / "old.pt", str(config), ["Data.subjects=[sbj_2]"]) == [
        f"Train.max_steps: trained with 600, {config} now says 2400"]
    torch.save({"kind": "fmri_autoencoder"}, tmp_path / "unrecorded.pt")   # nothing to compare with
    assert config_drift(tmp_path / "unrecorded.pt", str(config), []) == []


def test_a_missing_shipped_file_is_reported_not_retrained(tmp_path):
    from inference.demo import ensure_weight

    (tmp_path / "tokenizer.pt").write_bytes(b"weights")
    config = tmp_path / "tokenizer.yaml"
    config.write_text("KIND: tokenizer\n")
    write_manifest(tmp_path, {"tokenizer.pt": {"command": "python train.py tokenizer", "config": str(config)}},
                   note="test")
    (tmp_path / "tokenizer.pt").unlink()
    with pytest.raises(CheckpointError, match="git checkout"):
        ensure_weight("tokenizer", tmp_path / "tokenizer.pt", str(config), [], log=lambda _: None)


def test_a_demo_image_stage_it_must_train_gets_its_decoder_pool_first(sim_root, tmp_path, monkeypatch):
    import inference.demo as demo
    from inference.demo_weights import pool_folder

    monkeypatch.chdir(tmp_path)                    # the demo's relative data, config and weight paths
    shutil.copytree(REPO / "configs" / "demo", tmp_path / "configs" / "demo")
    shutil.copytree(sim_root, tmp_path / demo.DEMO_SIM_ROOT)
    pool = pool_folder("tokenizer")
    seen = []
    monkeypatch.setattr(demo, "train_stage",
                        training_stub(tmp_path / "run", lambda: seen.append((pool / "pool.json").is_file())))
    stable = tmp_path / "weights" / "tokenizer.pt"
    stable.parent.mkdir()
    assert demo.ensure_weight("tokenizer", stable, demo.STAGE_CONFIGS["tokenizer"], [], log=lambda _: None) == stable
    assert seen == [True] and stable.read_bytes() == b"weights"


def test_a_run_folder_or_run_name_given_for_a_demo_weight_is_used_not_retrained(tmp_path):
    from inference.demo import ensure_weight

    run = tmp_path / "maskgit" / "demo_maskgit_20261206-143647"
    run.mkdir(parents=True)
    (run / "maskgit.pt").write_bytes(b"weights")
    config = tmp_path / "maskgit.yaml"                     # training would fail on it: never reached
    config.write_text("KIND: maskgit\n")
    lines = []
    for given in (run, tmp_path / "maskgit" / "demo_maskgit"):   # the run folder, then the run name
        assert ensure_weight("maskgit", given, str(config), [], log=lines.append) == run / "maskgit.pt"
        assert lines[-1] == f"demo: using {run / 'maskgit.pt'} (what {given} names)"
    assert sorted(p.name for p in run.iterdir()) == ["maskgit.pt"]


def test_ship_refuses_runs_not_trained_from_the_committed_config(tmp_path):
    import yaml

    import models  # noqa: F401
    from inference.demo_weights import check_run_matches_config
    from utils.config import config_from_dict, read_yaml, to_dict

    config = "configs/demo/tokenizer.yaml"
    values = to_dict(config_from_dict(read_yaml(config), config, kind="tokenizer"))
    values["Train"]["out_dir"] = str(tmp_path)             # where and how a run reported may differ
    values["Train"]["log_interval"] += 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    check_run_matches_config(tmp_path, "tokenizer", config)
    values["Train"]["max_steps"] += 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(CheckpointError, match="Train.max_steps"):
        check_run_matches_config(tmp_path, "tokenizer", config)


def test_ship_maskgit_alone_keeps_the_shipped_tokenizer_and_checks_it_was_trained_on_it(tmp_path):
    import torch
    import yaml

    import models  # noqa: F401
    from inference.demo_weights import STAGES, read_manifest, ship
    from utils.config import config_from_dict, read_yaml, to_dict
    from utils.io import file_sha256

    configs = {stage: config for stage, config, _ in STAGES}
    dest = tmp_path / "shipped"
    dest.mkdir()
    (dest / "tokenizer.pt").write_bytes(b"tokenizer weights")
    write_manifest(dest, {"tokenizer.pt": {"command": "python train.py tokenizer", "config": configs["tokenizer"],
                                           "extra": {"run": "tok_run", "trained_seconds": 7}}}, note="test")

    def maskgit_run(name: str, tokenizer_sha: str):
        run = tmp_path / name
        run.mkdir()
        values = to_dict(config_from_dict(read_yaml(configs["maskgit"]), configs["maskgit"], kind="maskgit"))
        values["Train"]["out_dir"] = str(tmp_path)
        (run / "config.yaml").write_text(yaml.safe_dump(values))
        torch.save({"model": {}, "tokenizer": {"path": "x", "sha256": tokenizer_sha}}, run / "maskgit.pt")
        (run / "log.csv").write_text("step,time_s\n1,3.5\n")
        return run

    with pytest.raises(CheckpointError, match="'tokenizer'.sha256"):
        ship({"maskgit": maskgit_run("other_tokens", "0" * 64)}, dest)
    assert not (dest / "maskgit.pt").exists()              # refused before anything was copied

    run = maskgit_run("mg_run", file_sha256(dest / "tokenizer.pt"))
    ship({"maskgit": run}, dest)
    files = read_manifest(dest)["files"]
    assert files["tokenizer.pt"]["run"] == "tok_run" and files["tokenizer.pt"]["trained_seconds"] == 7
    assert files["maskgit.pt"]["run"] == "mg_run" and files["maskgit.pt"]["trained_seconds"] == 3.5
    assert files["maskgit.pt"]["sha256"] == file_sha256(run / "maskgit.pt") == file_sha256(dest / "maskgit.pt")
    assert verify_shipped(dest / "tokenizer.pt") and verify_shipped(dest / "maskgit.pt")

    assert "logged_from_step" not in files["maskgit.pt"]
    assert read_manifest(dest)["note"] == "trained by train.py from the committed demo configs, one CPU thread"

    resumed = maskgit_run("mg_resumed", file_sha256(dest / "tokenizer.pt"))  # a resumed run logs its own steps
    (resumed / "log.csv").write_text("step,time_s\n9100,18.0\n9200,36.5\n")
    (dest / "maskgit.pt").unlink()
    ship({"maskgit": resumed}, dest, note="MaskGIT resumed at step 9000.")
    manifest = read_manifest(dest)
    assert manifest["files"]["maskgit.pt"]["logged_from_step"] == 9100
    assert manifest["files"]["maskgit.pt"]["trained_seconds"] == 36.5
    assert manifest["note"].endswith("one CPU thread. MaskGIT resumed at step 9000.")

    (dest / "tokenizer.pt").write_bytes(b"changed tokenizer")  # a kept file must still match its manifest
    (dest / "maskgit.pt").unlink()
    with pytest.raises(CheckpointError, match="sha256"):
        ship({"maskgit": run}, dest)


def test_demo_train_trains_on_one_thread_as_the_shipped_files_were(tmp_path, monkeypatch):
    import inference.demo
    import inference.demo_weights as dw

    threads_during_training = []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(inference.demo, "train_stage",
                        training_stub(tmp_path / "runs", lambda: threads_during_training.append(torch.get_num_threads())))
    monkeypatch.setattr(dw, "prepare_data", lambda log: None)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        folder = dw.retrain(tmp_path / "out", log=lambda line: None)
    finally:
        torch.set_num_threads(before)
    assert threads_during_training == [1, 1]
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME, "maskgit.pt", "tokenizer.pt"]
