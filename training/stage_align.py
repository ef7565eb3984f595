"""Stage `align`: fit LEA's ridge heads between fMRI latents and image features, per subject.

Inputs (a KIND `lea` config): Data (subject, dataset), Features (backend), Align (alphas,
intercepts, re-standardisation) and Checkpoints.fmri (the trained `fmri_autoencoder.pt` or its run
folder, with `{subject}` in the path). Training rows: latents of the training trials (no voxel dropout, eval
mode) and the features of their images. Output: a new run folder under the folder of
Checkpoints.align, holding `align.pt` (models.alignment.AlignmentHeads, with the sha256 of the fMRI
checkpoint and the Features it was fitted with, which LEA checks) and `scores.json`:

- decoding: for each test trial, the correlation of its predicted feature with the feature of
  every test image; top-1 identification accuracy (chance 1 / #images) and pair-wise
  identification (share of other images scoring below the true one; chance 0.5);
- encoding: predicted vs. measured test latents: mean Pearson r over latent dimensions (chance 0)
  and pair-wise identification of trials (chance 0.5);
- the same scores on the training set, and whether test-time re-standardisation (which uses
  test-set statistics) was on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from datasets.common import SubjectData
from models.alignment import AlignmentHeads
from models.fmri_autoencoder import FMRIAutoencoder
from models.lea import check_fmri_fits, load_trained_network
from training.distributed import DistInfo
from models.provenance import alignment_provenance
from training.stage_fmri import FINAL_NAME as FMRI_FILE, KIND as FMRI_KIND, image_features, load_stage_subject
from utils.config import LEAConfig, config_from_dict, subject_path, to_dict
from utils.io import atomic_write_json, new_run_dir
from utils.run_files import resolve

FINAL_NAME = "align.pt"
SCORES_NAME = "scores.json"
ENCODE_BATCH = 64
EPS = 1e-8


def load_fmri_autoencoder(path: str, data: SubjectData) -> FMRIAutoencoder:
    """The trained autoencoder of `data.subject`; its recorded subject and voxel layout must be the data's."""
    model = load_trained_network(FMRI_KIND, path, expect={"dataset": data.dataset, "subject": data.subject})
    check_fmri_fits(model, data.roi_patch, path, data.subject)
    return model


@torch.no_grad()
def fmri_latents(model: FMRIAutoencoder, fmri) -> torch.Tensor:
    """Latents [N, D] of fMRI rows [N, V] (float32 numpy)."""
    x = torch.as_tensor(fmri, dtype=torch.float32)
    return torch.cat([model.encode(x[i:i + ENCODE_BATCH])[:, 0] for i in range(0, len(x), ENCODE_BATCH)])


def correlation_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r between every row of a [N, D] and every row of b [M, D] -> [N, M]."""
    a = a.double() - a.double().mean(1, keepdim=True)
    b = b.double() - b.double().mean(1, keepdim=True)
    a = a / (a.norm(dim=1, keepdim=True) + EPS)
    b = b / (b.norm(dim=1, keepdim=True) + EPS)
    return a @ b.T


def identification(pred: torch.Tensor, candidates: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Row i of pred should match candidates[truth[i]]: top-1 accuracy and pair-wise identification."""
    corr = correlation_matrix(pred, candidates)  # [N, M]
    own = corr.gather(1, truth[:, None])  # [N, 1]
    m = candidates.shape[0]
    return {"top1_accuracy": float((corr.argmax(1) == truth).double().mean()), "top1_chance": 1.0 / m,
            "pairwise_identification": float(((corr < own).double().sum(1) / (m - 1)).mean()),
            "pairwise_chance": 0.5}


def dimension_correlation(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over dimensions of the Pearson r across rows."""
    return float(correlation_matrix(pred.T, target.T).diagonal().mean())


def scores(heads: AlignmentHeads, latents: torch.Tensor, image_index: torch.Tensor,
           image_feats: torch.Tensor) -> dict[str, dict[str, float]]:
    """Decoding and encoding scores for trials with `latents` [N, Df] showing images `image_index`."""
    decoded = heads.decode(latents)  # [N, Di]
    encoded = heads.encode(image_feats[image_index])  # [N, Df]
    n = torch.arange(len(latents))
    return {"decoding": identification(decoded, image_feats, image_index),
            "encoding": {"latent_pearson_r": dimension_correlation(encoded, latents), "latent_r_chance": 0.0,
                         **{k: v for k, v in identification(encoded, latents, n).items()
                            if k.startswith("pairwise")}}}


def align_subject(cfg: LEAConfig, subject: str, source: str, run_name: Optional[str],
                  log: Callable[[str], None], progress: bool = True) -> Path:
    data = load_stage_subject(cfg.data, subject, source)
    ckpt = str(resolve(subject_path(cfg.checkpoints.fmri, f"{source}: Checkpoints.fmri", subject), FMRI_FILE))
    model = load_fmri_autoencoder(ckpt, data)
    train_latents = fmri_latents(model, data.train_fmri)  # [N, Df]
    test_latents = fmri_latents(model, data.test_fmri)  # [T, Df]
    train_feats = image_features(cfg.features, data.train_images, f"{data.dataset}_{subject}_train_images", progress)
    test_feats = image_features(cfg.features, data.test_images, f"{data.dataset}_{subject}_test_images", progress)
    train_index = torch.as_tensor(data.train_image_index, dtype=torch.long)
    heads = AlignmentHeads.from_config(cfg.align).fit(train_latents, train_feats[train_index])
    heads.provenance = alignment_provenance(ckpt, to_dict(cfg.features))
    run_dir = new_run_dir(Path(subject_path(cfg.checkpoints.align, f"{source}: Checkpoints.align", subject)).parent,
                          run_name or cfg.name)
    heads.save(run_dir / FINAL_NAME)
    heads.save_pretrained(run_dir / Path(FINAL_NAME).stem)
    report = {"subject": subject, "dataset": data.dataset, "fmri_checkpoint": ckpt,
              "features": to_dict(cfg.features), "heads": heads.describe(),
              "restandardize_uses_test_statistics": heads.restandardize,
              "train": scores(heads, train_latents, train_index, train_feats),
              "test": scores(heads, test_latents, torch.arange(len(test_latents)), test_feats)}
    atomic_write_json(run_dir / SCORES_NAME, report)
    t = report["test"]
    log(f"align {subject}: test decoding top-1 {t['decoding']['top1_accuracy']:.3f} "
        f"(chance {t['decoding']['top1_chance']:.3f}), pair-wise {t['decoding']['pairwise_identification']:.3f}; "
        f"encoding latent r {t['encoding']['latent_pearson_r']:.3f} -> {run_dir / FINAL_NAME}")
    return run_dir


def run_align(values: dict, source: str, info: DistInfo, run_name: Optional[str],
              log: Callable[[str], None] = print, progress: bool = True) -> list[Path]:
    """Fit and save the heads of every subject of Data.subjects (rank 0 only; closed form)."""
    cfg = config_from_dict(values, source, kind="lea")
    if not info.is_main:
        return []
    return [align_subject(cfg, s, source, run_name, log, progress) for s in cfg.data.subjects]
