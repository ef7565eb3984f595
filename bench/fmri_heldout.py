"""Choose the fMRI autoencoder's training settings on training trials only.

The fMRI stage (`train.py fmri`'s Trainer, with the config's settings plus `--set` overrides) is
trained on the trials of all training images but a held-out fifth; a decoding ridge (the LEA config's
`Align.alphas`, chosen by 5-fold CV) maps its latents to the image features, and the features it
predicts for the held-out images' trials are scored:

- attribute read-out (simulated data): the semantic classifier's linear read-out
  (evaluation/semantic_sim.py), fitted on the training images' features, names each held-out
  stimulus's shape, palette, stripe orientation and frequency and layout from its predicted
  features; per attribute and their mean;
- pair-wise identification of the held-out images in feature space (any data);
- encoding: the held-out images' features through the encoding ridge (features -> latent, alphas
  by CV) and the autoencoder's decoder, against their measured trials: voxel-wise Pearson r, mean
  over voxels (single trials, so far below a noise ceiling; for comparing settings).

Beside them, the same ridges straight from and to the voxels (the plain baselines). The test set is not read.
Predictions are re-standardised over the held-out rows, as LEA's decoding head does over the test set.

    python bench/fmri_heldout.py --config configs/demo/fmri_GOD.yaml --set Train.max_steps=2000 \\
        [--set ...] [--out heldout.json]

Each run trains one autoencoder into a temporary folder, deleted afterwards (image features are cached
in `Features.cache_dir`, as train.py caches them). Held-out training trials are single trials, while
the test set's are averages of repeats: a setting that wins here is a candidate to confirm on the test
set, not a result.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402,F401  (registers the Model schemas)
from eval_image_side import readout_accuracy, stimulus_attributes  # noqa: E402
from evaluation import metrics as M  # noqa: E402
from evaluation.semantic_sim import AttributeClassifier  # noqa: E402
from models.alignment import RidgeHead, restandardize  # noqa: E402
from training.distributed import DistInfo  # noqa: E402
from training.engine import Trainer, seed_everything, start_run_dir  # noqa: E402
from training.stage_fmri import FMRIStage, data_section, fmri_config_for, image_features, load_stage_subject  # noqa: E402
from utils.config import apply_overrides, load_config, read_yaml  # noqa: E402

DEFAULT_FMRI_CONFIG = "configs/demo/fmri_GOD.yaml"
DEFAULT_LEA_CONFIG = "configs/demo/LEA_GOD.yaml"
HELD_OUT_FRACTION = 0.2
VOXEL_ALPHAS = (1.0, 10.0, 100.0, 1e3, 1e4)   # voxel counts differ from the latent's 128: its own grid
CV_FOLDS = 5


def split_images(num_images: int, seed: int) -> np.ndarray:
    """Indices of the held-out training images (a random fifth)."""
    order = np.random.default_rng(seed).permutation(num_images)
    return np.sort(order[: max(2, round(HELD_OUT_FRACTION * num_images))])


def trial_rows(image_index: np.ndarray, held_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of the trials [N] -> image rows: every trial of a held-out
    image is held out."""
    held = np.isin(image_index, held_images)  # [N]
    return np.flatnonzero(~held), np.flatnonzero(held)


def train_on(values: dict, source: str, data, rows: np.ndarray, run_dir: Path) -> torch.nn.Module:
    """The fMRI autoencoder trained as `train.py fmri` trains it, on the training trials `rows` only."""
    kept = dataclasses.replace(data, train_fmri=data.train_fmri[rows], train_image_index=data.train_image_index[rows])
    cfg = fmri_config_for(values, source, data.subject, kept)
    cfg.train.progress = False
    seed_everything(cfg.seed)
    quiet = lambda _msg: None  # noqa: E731  (the run folder is temporary: its messages would mislead)
    stage = FMRIStage(cfg, kept, log=quiet)
    trainer = Trainer(stage, run_dir, DistInfo(), log=quiet)
    trainer.fit()
    return stage.module.model.eval()


def predicted_features(x_train: torch.Tensor, y_train: torch.Tensor, x_held: torch.Tensor,
                       alphas: list[float]) -> torch.Tensor:
    """Ridge (alpha by CV) from x to the features, applied to the held-out rows and re-standardised
    over them to the training targets' per-dimension statistics: [H, D]."""
    head = RidgeHead(fit_intercept=True, alphas=alphas, cv=CV_FOLDS).fit(x_train, y_train)
    return restandardize(head.predict(x_held), y_train.mean(0), y_train.std(0, unbiased=False))


def scores(pred: torch.Tensor, truth_feats: torch.Tensor, probe: AttributeClassifier | None,
           truth_attrs: np.ndarray | None) -> dict:
    out = {"feature_pairwise_pcc": M.feature_identification(truth_feats.numpy(), pred[:, None].numpy()).value}
    if probe is not None:
        per = readout_accuracy(probe, pred, truth_attrs)
        out["attribute_readout"] = {**per, "mean": float(np.mean(list(per.values())))}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=DEFAULT_FMRI_CONFIG, help="fMRI stage config (default: the demo's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="Section.key=value, as train.py")
    p.add_argument("--lea-config", default=DEFAULT_LEA_CONFIG, help="where Align.alphas come from")
    p.add_argument("--subject", help="one of Data.subjects (default: the first)")
    p.add_argument("--split-seed", type=int, default=1, help="which fifth of the training images is held out")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)

    values = apply_overrides(read_yaml(args.config), args.overrides)
    data_cfg = data_section(values, args.config)
    subject = args.subject or data_cfg.subjects[0]
    data = load_stage_subject(data_cfg, subject, args.config)
    alphas = list(load_config(args.lea_config, kind="lea").align.alphas)
    held_images = split_images(len(data.train_images), args.split_seed)
    rows, held_rows = trial_rows(data.train_image_index, held_images)

    cfg = fmri_config_for(values, args.config, subject, data)
    feats = image_features(cfg.features, data.train_images, f"{data.dataset}_{subject}_train_images",
                           progress=False).double()             # [M, D]
    attributes = stimulus_attributes(data, data_cfg.path)
    probe = truth_attrs = None
    if attributes is not None:
        probe = AttributeClassifier.fit_features(feats, attributes[0])
        truth_attrs = attributes[0][data.train_image_index[held_rows]]
    y_train, y_held = feats[data.train_image_index[rows]], feats[data.train_image_index[held_rows]]

    with tempfile.TemporaryDirectory() as tmp:
        model = train_on(values, args.config, data, rows, start_run_dir(tmp, "heldout", DistInfo()))
    with torch.no_grad():
        latents = model.encode(torch.as_tensor(data.train_fmri, dtype=torch.float32))[:, 0].double()  # [N, Df]
    voxels = torch.as_tensor(data.train_fmri, dtype=torch.float64)
    encoded = RidgeHead(fit_intercept=True, alphas=alphas, cv=CV_FOLDS).fit(y_train, latents[rows]).predict(y_held)
    with torch.no_grad():
        lea_fmri = model.decode(encoded.float())[:, 0].double()  # [H, V]
    ridge_fmri = RidgeHead(fit_intercept=True, alphas=list(VOXEL_ALPHAS), cv=CV_FOLDS).fit(
        y_train, voxels[rows]).predict(y_held)  # [H, V]
    result = {
        "config": args.config, "overrides": args.overrides, "subject": subject,
        "held_out_images": int(len(held_images)), "held_out_trials": int(len(held_rows)),
        "training_trials": int(len(rows)),
        "lea_latent": scores(predicted_features(latents[rows], y_train, latents[held_rows], alphas),
                             y_held, probe, truth_attrs),
        "voxel_ridge": scores(predicted_features(voxels[rows], y_train, voxels[held_rows], list(VOXEL_ALPHAS)),
                              y_held, probe, truth_attrs),
    }
    for name, predicted in (("lea_latent", lea_fmri), ("voxel_ridge", ridge_fmri)):
        r = result[name]
        r["encoding_pearson_mean"] = float(np.nanmean(M.voxelwise_pearson(data.train_fmri[held_rows],
                                                                          predicted.numpy())))
        attrs = r.get("attribute_readout")
        line = " ".join(f"{k} {v:.3f}" for k, v in attrs.items()) if attrs else "attributes skipped (no ground truth)"
        print(f"{name:11s} encoding r {r['encoding_pearson_mean']:.3f}; decoding: feature pair-wise "
              f"{r['feature_pairwise_pcc']:.3f}, attribute read-out {line}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
