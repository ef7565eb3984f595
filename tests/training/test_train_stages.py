"""Every training stage runs a few steps on the tiny simulated data through train.py."""
import json
from pathlib import Path

import pytest
import torch

import train
from models.alignment import AlignmentHeads
from models.maskgit import MaskGITTransformer
from datasets.simulate import BOLD_DIR, GOD_DIR
from training.engine import load_checkpoint
from training.logger import read_log
from training.stage_fmri import voxel_patch_ids
from utils.errors import CheckpointError, ConfigError

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo"
TINY_FMRI = ["Model.patch_size=4", "Model.embed_dim=32", "Model.num_heads=2", "Model.encoder_depth=1",
             "Model.decoder_embed_dim=32", "Model.decoder_num_heads=2", "Model.decoder_depth=1",
             "Model.latent_dim=32", "Features.dim=32"]
TINY_TRAIN = ["Train.batch_size=4", "Train.log_interval=1", "Train.warmup_steps=1"]


def run_stage(stage: str, config: str, tmp: Path, *overrides: str, steps: int = 3, extra=()) -> Path:
    """Run train.py and return the one new run folder under tmp/<stage>."""
    out = tmp / stage
    before = set(out.iterdir()) if out.is_dir() else set()
    args = [stage, "--config", str(DEMO / config), "--device", "cpu",
            "--set", f"Train.out_dir={out}", "--set", f"Train.max_steps={steps}",
            "--set", f"Train.sample_interval={steps}", "--set", f"Train.save_interval={steps}"]
    for o in TINY_TRAIN + list(overrides):
        args += ["--set", o]
    assert train.main(args + list(extra)) == 0
    (run_dir,) = set(out.iterdir()) - before
    return run_dir


def fmri_overrides(sim_root: Path, tmp: Path, dataset: str = "GOD") -> list[str]:
    path = sim_root / (GOD_DIR if dataset == "GOD" else BOLD_DIR)
    return [f"Data.path={path}", f"Features.cache_dir={tmp / 'cache'}"] + TINY_FMRI


@pytest.fixture(scope="module")
def trained(sim_root, tmp_path_factory):
    """fMRI autoencoder (GOD sbj_1) and tokenizer runs shared by the tests below."""
    tmp = tmp_path_factory.mktemp("stages")
    fmri = run_stage("fmri", "fmri_GOD.yaml", tmp, *fmri_overrides(sim_root, tmp))
    tok = run_stage("tokenizer", "tokenizer.yaml", tmp, f"Data.path={sim_root / GOD_DIR}",
                    "Data.image_folder=null",  # the stimuli, not the demo's pool
                    "Model.ch_base=32", "Model.ch_mult=[1,2,2,4]", "Loss.disc_start=1", steps=2)
    return {"tmp": tmp, "fmri": fmri, "tokenizer": tok}


def test_fmri_stage_writes_model_log_samples(trained):
    run = trained["fmri"]
    assert {"config.yaml", "log.csv", "last.pt", "step_000003.pt", "fmri_autoencoder.pt"} <= {
        p.name for p in run.iterdir()}
    assert {p.name for p in (run / "samples").iterdir()} == {"step_000003.npz", "step_000003.png"}
    final = torch.load(run / "fmri_autoencoder.pt", weights_only=True)
    assert final["kind"] == "fmri_autoencoder" and final["subject"] == "sbj_1"
    assert sum(final["roi_patch"]) == final["num_voxels"] == final["model"]["channel_mapper.0.0.weight"].shape[0] + sum(
        final["roi_patch"][1:])
    rows = read_log(run)
    assert [r["step"] for r in rows] == [1, 2, 3] and {"rec", "cls", "loss"} <= set(rows[0])


def test_fmri_stage_bold5000_and_masked_mode(sim_root, tmp_path):
    run = run_stage("fmri", "fmri_BOLD.yaml", tmp_path, *fmri_overrides(sim_root, tmp_path, "BOLD5000"), steps=2)
    assert torch.load(run / "fmri_autoencoder.pt", weights_only=True)["subject"] == "CSI1"
    masked = run_stage("fmri", "fmri_GOD.yaml", tmp_path, *fmri_overrides(sim_root, tmp_path), steps=2,
                       extra=["--mask-ratio", "0.5"])
    final = torch.load(masked / "fmri_autoencoder.pt", weights_only=True)
    assert final["objective"] == "masked" and "cls" not in read_log(masked)[0]


def test_voxel_patches_stay_inside_their_roi():
    ids = voxel_patch_ids((5, 3), 2)
    assert ids.tolist() == [0, 0, 1, 1, 2, 3, 3, 4]


def test_fmri_resume_continues_in_a_new_run_folder(sim_root, trained, tmp_path):
    first = trained["fmri"]
    resumed = run_stage("fmri", "fmri_GOD.yaml", tmp_path, *fmri_overrides(sim_root, tmp_path), steps=5,
                        extra=["--resume", str(first)])
    assert resumed != first and [r["step"] for r in read_log(resumed)] == [4, 5]
    assert load_checkpoint(resumed)["step"] == 5


def test_fmri_error_paths(sim_root, trained, tmp_path):
    base = fmri_overrides(sim_root, tmp_path)
    with pytest.raises(CheckpointError, match="roi_patch"):  # sbj_1 weights for sbj_2's voxels
        run_stage("fmri", "fmri_GOD.yaml", tmp_path, *base, "Data.subjects=[sbj_2]",
                  f"Init.checkpoint={trained['fmri'] / 'fmri_autoencoder.pt'}")
    with pytest.raises(CheckpointError, match="Init.mindvis_ckpt=null"):
        run_stage("fmri", "fmri_GOD.yaml", tmp_path, *base, f"Init.mindvis_ckpt={tmp_path / 'fmri_encoder.pth'}")
    with pytest.raises(CheckpointError, match="nothing there"):
        run_stage("fmri", "fmri_GOD.yaml", tmp_path, *base, extra=["--resume", str(tmp_path / "no_run")])
    with pytest.raises(CheckpointError, match="embed_dim"):
        run_stage("fmri", "fmri_GOD.yaml", tmp_path, *base, "Model.embed_dim=16", steps=5,
                  extra=["--resume", str(trained["fmri"])])
    with pytest.raises(ConfigError, match="Features.dim"):
        run_stage("fmri", "fmri_GOD.yaml", tmp_path, *base, "Model.latent_dim=16")


def test_tokenizer_stage_writes_model_and_recon_grid(trained):
    run = trained["tokenizer"]
    final = torch.load(run / "tokenizer.pt", weights_only=True)
    assert final["kind"] == "tokenizer" and final["token_grid"] == 8
    assert (run / "samples" / "step_000002.png").is_file()
    assert {"rec", "codebook", "commitment", "g_adv", "d_hinge", "ssim_index"} <= set(read_log(run)[0])


def test_tokenizer_image_size_must_match_resolution(sim_root, tmp_path):
    with pytest.raises(ConfigError, match="resolution 64"):
        run_stage("tokenizer", "tokenizer.yaml", tmp_path, f"Data.path={sim_root / GOD_DIR}", "Data.image_size=32")


def maskgit_overrides(sim_root: Path, trained: dict) -> list[str]:
    return [f"Data.path={sim_root / GOD_DIR}", "Data.image_folder=null",   # the stimuli, not the demo's pool
            f"Features.cache_dir={trained['tmp'] / 'cache'}",
            f"Init.tokenizer={trained['tokenizer'] / 'tokenizer.pt'}", "Model.embed_dim=64", "Model.depth=2",
            "Sampling.steps=3"]


def test_maskgit_stage_loss_falls_and_samples(sim_root, trained):
    run = run_stage("maskgit", "maskgit.yaml", trained["tmp"], *maskgit_overrides(sim_root, trained),
                    "Train.lr=2.0e-3", "Train.batch_size=16", steps=50)
    rows = read_log(run)
    assert sum(r["loss"] for r in rows[-5:]) / 5 < 0.85 * rows[0]["loss"]
    assert all(0.5 <= r["mask_ratio"] <= 1.0 for r in rows)
    assert (run / "samples" / "step_000050.png").is_file()
    final = torch.load(run / "maskgit.pt", weights_only=True)
    assert final["kind"] == "maskgit" and final["model_config"]["token_grid"] == 8
    _same_weights(MaskGITTransformer.from_pretrained(run / "maskgit"), final["model"])


def test_maskgit_says_that_its_previews_ignore_candidates(sim_root, trained, capsys):
    run = run_stage("maskgit", "maskgit.yaml", trained["tmp"], *maskgit_overrides(sim_root, trained),
                    "Sampling.candidates=4", "Train.batch_size=4", steps=1)
    assert "Sampling.candidates=4 applies to LEA decoding" in capsys.readouterr().out
    assert (run / "samples" / "step_000001.png").is_file()
    run_stage("maskgit", "maskgit.yaml", trained["tmp"], *maskgit_overrides(sim_root, trained),
              "Train.batch_size=4", steps=1)
    assert "Sampling.candidates" not in capsys.readouterr().out


def test_maskgit_checks_tokenizer_and_feature_sizes(sim_root, trained):
    base = maskgit_overrides(sim_root, trained)
    with pytest.raises(ConfigError, match="condition_dim"):
        run_stage("maskgit", "maskgit.yaml", trained["tmp"], *base, "Features.dim=64")
    with pytest.raises(ConfigError, match="token_grid"):
        run_stage("maskgit", "maskgit.yaml", trained["tmp"], *base, "Model.token_grid=4")
    with pytest.raises(ConfigError, match="resolution"):
        run_stage("maskgit", "maskgit.yaml", trained["tmp"], *base, "Data.image_size=32")
    with pytest.raises(CheckpointError, match="Init.tokenizer"):
        run_stage("maskgit", "maskgit.yaml", trained["tmp"], *base, "Init.tokenizer=missing.pt")


def test_align_stage_fits_heads_and_reports_scores(sim_root, trained, tmp_path):
    config = tmp_path / "align.yaml"
    config.write_text(
        "KIND: lea\nNAME: align_test\n"
        f"Data: {{dataset: GOD, path: {sim_root / GOD_DIR}, subjects: [sbj_1], image_size: 64}}\n"
        f"Features: {{backend: handcrafted, dim: 32, cache_dir: {tmp_path / 'cache'}}}\n"
        f"Checkpoints: {{fmri: '{trained['fmri'] / 'fmri_autoencoder.pt'}', "
        f"align: '{tmp_path / 'align' / '{subject}' / 'align.pt'}'}}\n")
    assert train.main(["align", "--config", str(config)]) == 0
    (run,) = (tmp_path / "align" / "sbj_1").iterdir()
    report = json.loads((run / "scores.json").read_text())
    test = report["test"]
    assert test["decoding"]["top1_chance"] == pytest.approx(1 / 10)
    assert 0.0 <= test["decoding"]["pairwise_identification"] <= 1.0
    assert report["restandardize_uses_test_statistics"] is True
    heads = AlignmentHeads.load(run / "align.pt")
    assert heads.decoder.in_dim == 32
    from_folder = AlignmentHeads.from_pretrained(run / "align")
    latents = torch.randn(5, 32, dtype=torch.float64)
    torch.testing.assert_close(from_folder.decode(latents), heads.decode(latents), rtol=1e-12, atol=1e-12)
    assert from_folder.describe() == heads.describe()


def _same_weights(loaded: torch.nn.Module, state: dict) -> None:
    assert set(loaded.state_dict()) == set(state)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_every_final_model_file_has_a_hub_style_folder(trained, tmp_path):
    from models.fmri_autoencoder import FMRIAutoencoder
    from models.vqgan import VQGAN

    for run, name, network in ((trained["fmri"], "fmri_autoencoder", FMRIAutoencoder),
                               (trained["tokenizer"], "tokenizer", VQGAN)):
        folder = run / name
        assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json"}
        final = torch.load(run / f"{name}.pt", weights_only=True)
        config = json.loads((folder / "config.json").read_text())
        assert config["kind"] == final["kind"] and config["model_config"] == final["model_config"]
        _same_weights(network.from_pretrained(folder), final["model"])
        with pytest.raises(CheckpointError, match="never overwritten"):
            network.from_pretrained(folder).save_pretrained(folder)
    assert json.loads((trained["fmri"] / "fmri_autoencoder" / "config.json").read_text())["subject"] == "sbj_1"
    with pytest.raises(CheckpointError, match="key 'kind'"):
        VQGAN.from_pretrained(trained["fmri"] / "fmri_autoencoder")
    with pytest.raises(CheckpointError, match="config.json"):
        VQGAN.from_pretrained(tmp_path)
