"""The whole chain through its real entry points, as a user runs it on new data:

    python -m datasets.simulate  ->  train.py fmri  ->  python -m datasets.decoder_pool
    ->  train.py tokenizer / maskgit (on the pool) / align  ->  LEA_GOD.py

Tiny networks and a few steps each: this checks that every stage's output is the next stage's
input in the on-disk formats, not that the models are good (the demo shows that).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.paths import REPO

DEMO = REPO / "configs" / "demo"
STEPS = 3
TINY = {
    "fmri": ["Model.patch_size=4", "Model.embed_dim=32", "Model.num_heads=2", "Model.encoder_depth=1",
             "Model.decoder_embed_dim=32", "Model.decoder_num_heads=2", "Model.decoder_depth=1",
             "Model.latent_dim=32", "Features.dim=32"],
    "tokenizer": ["Model.ch_base=32", "Model.ch_mult=[1,2,2,4]", "Loss.disc_start=1"],
    "maskgit": ["Model.embed_dim=32", "Model.depth=1", "Model.num_heads=2", "Features.dim=32",
                "Model.condition_dim=32"],
}


def run(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc.stdout


def only_file(folder: Path, name: str) -> Path:
    (found,) = folder.glob(f"*/{name}")
    return found


@pytest.mark.slow
def test_simulate_train_every_stage_then_decode_and_encode(tmp_path):
    sim = tmp_path / "sim"
    run("-m", "datasets.simulate", "--out", str(sim), "--scale", "tiny", "--seed", "3", cwd=REPO)
    god = sim / "Kamitani" / "npz"
    common = ["--device", "cpu", "--set", f"Train.max_steps={STEPS}", "--set", f"Train.sample_interval={STEPS}",
              "--set", f"Train.save_interval={STEPS}", "--set", "Train.batch_size=4", "--set",
              "Train.warmup_steps=1", "--set", f"Data.path={god}"]
    ckpt = tmp_path / "ckpt"

    def train(stage: str, config: str, *extra: str) -> None:
        sets = [a for o in TINY[stage] + list(extra) for a in ("--set", o)]
        run("train.py", stage, "--config", str(DEMO / config), *common,
            "--set", f"Train.out_dir={ckpt / stage}", *sets, cwd=REPO)

    cache = f"Features.cache_dir={tmp_path / 'cache'}"
    train("fmri", "fmri_GOD.yaml", "Data.subjects=[sbj_1]", cache)
    fmri = only_file(ckpt / "fmri", "fmri_autoencoder.pt")
    pool = tmp_path / "pool"
    run("-m", "datasets.decoder_pool", "--data", str(sim), "--out", str(pool), "--per-combination", "1",
        "--no-progress", cwd=REPO)
    train("tokenizer", "tokenizer.yaml", f"Data.image_folder={pool}")
    tokenizer = only_file(ckpt / "tokenizer", "tokenizer.pt")
    train("maskgit", "maskgit.yaml", f"Init.tokenizer={tokenizer}", f"Data.image_folder={pool}", cache)
    maskgit = only_file(ckpt / "maskgit", "maskgit.pt")

    lea = ["--config", str(DEMO / "LEA_GOD.yaml"), "--set", f"Data.path={god}", "--set", "Data.subjects=[sbj_1]",
           "--set", "Features.dim=32", "--set", cache]
    run("train.py", "align", *lea, "--set", f"Checkpoints.fmri={fmri}",
        "--set", f"Checkpoints.align={ckpt / 'align' / 'align.pt'}", cwd=REPO)
    align = only_file(ckpt / "align", "align.pt")
    scores = json.loads((align.parent / "scores.json").read_text())
    assert scores, "align wrote empty scores"

    out = tmp_path / "results"
    run("LEA_GOD.py", *lea, "--subject", "sbj_1", "--fmri-ckpt", str(fmri), "--tokenizer-ckpt", str(tokenizer),
        "--maskgit-ckpt", str(maskgit), "--align", str(align), "--num-samples", "2", "--steps", "3",
        "--out", str(out), "--no-progress", cwd=REPO)
    (result,) = out.iterdir()
    subject = result / "sbj_1"
    decoded = np.load(subject / "decoded_images.npy")
    predicted = np.load(subject / "predicted_fmri.npy")
    assert decoded.dtype == np.uint8 and decoded.shape[1] == 2 and decoded.shape[-1] == 3
    assert predicted.shape[0] == decoded.shape[0] and np.isfinite(predicted).all()
    metrics = json.loads((subject / "metrics.json").read_text())
    assert metrics["checkpoints"]["align"]["path"] == str(align)   # the fitted heads were used, not refitted
    assert metrics["decoding"]["pairwise_ssim"]["chance"] == 0.5
    assert np.isfinite(metrics["encoding"]["encoding_pearson_mean"]["value"])
    assert (result / "index.html").is_file()
