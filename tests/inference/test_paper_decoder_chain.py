"""The paper's image side end to end at a tiny size, through the real entry points:

    published tokenizer (plain state dict, frozen) + ImageNet MaskGIT (Flax tree)
      -> train.py maskgit (a few steps) -> train.py fmri -> train.py align -> LEA_GOD.py

with run folders passed where the scripts take weights and the alignment run found by LEA itself.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import train
from datasets import load_subject
from datasets.simulate import GOD_DIR
from inference.run_lea import main as lea_main
from models.maskgit import MaskGITConfig, MaskGITTransformer
from models.vqgan import VQGAN, VQGANConfig
from tests.inference.test_full_chain import DEMO, TINY
from tests.models.test_published import to_flax_tree
from tests.training.test_stimulus_images import write_folder
from utils.io import file_sha256

STEPS = 3
TOKENIZER = VQGANConfig(resolution=64, ch_base=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, num_res_mids=1,
                        ch_latent=8, num_codebook=16, dim_codebook=8)
IMAGENET = MaskGITConfig(num_codebook=16, token_grid=8, embed_dim=32, depth=1, num_heads=2, drop_rate=0.0,
                         condition_dim=32, extra_tokens=10)


def new_run(folder) -> "Path":
    (run,) = [p for p in folder.iterdir() if p.is_dir()]
    return run


@pytest.mark.slow
def test_frozen_published_tokenizer_imagenet_init_to_lea(sim_root, tmp_path, capsys):
    god = sim_root / GOD_DIR
    torch.manual_seed(0)
    tokenizer = tmp_path / "pretrains" / "MaskGIT_ImageNet256_checkpoint.pth"
    tokenizer.parent.mkdir()
    torch.save({f"module.{k}": v for k, v in VQGAN(TOKENIZER).state_dict().items()}, tokenizer)
    imagenet = tmp_path / "pretrains" / "maskgit_imagenet256.npz"
    np.savez(imagenet, **to_flax_tree(MaskGITTransformer(IMAGENET)))
    cache = f"Features.cache_dir={tmp_path / 'cache'}"
    common = ["--device", "cpu", "--set", f"Train.max_steps={STEPS}", "--set", f"Train.sample_interval={STEPS}",
              "--set", f"Train.save_interval={STEPS}", "--set", "Train.batch_size=4", "--set", "Train.warmup_steps=1",
              "--set", f"Data.path={god}", "--set", cache]

    def run_train(stage: str, config: str, *sets: str, out: str = ""):
        folder = tmp_path / (out or stage)
        args = [stage, "--config", str(DEMO / config), *common, "--set", f"Train.out_dir={folder}"]
        for s in sets:
            args += ["--set", s]
        assert train.main(args) == 0
        return new_run(folder)

    maskgit_run = run_train("maskgit", "maskgit.yaml", *TINY["maskgit"], "Model.num_codebook=16",
                            "Model.extra_tokens=10", "Data.subjects=[sbj_1,sbj_2]", "Data.image_folder=null",
                            f"Init.tokenizer={tokenizer}", f"Init.transformer={imagenet}")
    out = capsys.readouterr().out
    assert f"--maskgit-ckpt {maskgit_run}" in out
    table = (maskgit_run / "init_weights.txt").read_text()
    assert "0 ignored" in table and "new      decoder_embed.weight" in table and "taken    token_emb.weight" in table
    final = torch.load(maskgit_run / "maskgit.pt", weights_only=True)
    assert final["tokenizer"]["sha256"] == file_sha256(tokenizer)
    shared = load_subject("GOD", god, "sbj_1").train_images      # both subjects see these: each image once
    assert f"maskgit: {len({im.tobytes() for im in shared})} training images" in out

    # a decoder needs no fMRI: the same recipe on any folder of images
    write_folder(tmp_path / "imagenet_subset", 12)
    folder_run = run_train("maskgit", "maskgit.yaml", *TINY["maskgit"], "Model.num_codebook=16",
                           "Model.extra_tokens=10", f"Data.image_folder={tmp_path / 'imagenet_subset'}",
                           f"Init.tokenizer={tokenizer}", f"Init.transformer={imagenet}", "Data.flip=false",
                           out="maskgit_folder")
    assert "maskgit: 4 training images" in capsys.readouterr().out and (folder_run / "maskgit.pt").is_file()

    fmri_run = run_train("fmri", "fmri_GOD.yaml", *TINY["fmri"], "Data.subjects=[sbj_1]")
    assert f"--fmri-ckpt {fmri_run}" in capsys.readouterr().out

    lea = ["--config", str(DEMO / "LEA_GOD.yaml"), "--set", f"Data.path={god}", "--set", "Features.dim=32",
           "--set", cache, "--set", f"Checkpoints.align={tmp_path / 'align' / '{subject}' / 'align.pt'}"]
    assert train.main(["align", *lea, "--set", "Data.subjects=[sbj_1]", "--set", f"Checkpoints.fmri={fmri_run}"]) == 0
    align_run = new_run(tmp_path / "align" / "sbj_1")
    assert f"--align {align_run}" in capsys.readouterr().out

    assert lea_main([*lea, "--subject", "sbj_1", "--fmri-ckpt", str(fmri_run), "--maskgit-ckpt", str(maskgit_run),
                     "--tokenizer-ckpt", str(tokenizer), "--num-samples", "1", "--steps", "2",
                     "--out", str(tmp_path / "results"), "--no-progress"], dataset="GOD") == 0
    metrics = json.loads((new_run(tmp_path / "results") / "sbj_1" / "metrics.json").read_text())
    assert metrics["checkpoints"]["align"]["path"] == str(align_run / "align.pt")   # found, not refitted
    assert metrics["checkpoints"]["fmri"]["path"] == str(fmri_run / "fmri_autoencoder.pt")
    assert "published tokenizer" in metrics["checkpoints"]["tokenizer"]["file"]
    assert {c["status"] for c in metrics["settings"]["consistency"]} == {"ok"}
    assert len(metrics["settings"]["consistency"]) == 4
