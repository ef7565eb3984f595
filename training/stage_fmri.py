"""Stage `fmri`: train LEA's fMRI autoencoder (E_f, D_f) on one subject.

Objectives (Loss section, Data.fmri_drop_rate):
- autoencoding (default): zero a random `fmri_drop_rate` of the input voxels; MSE between the
  reconstruction and the clean fMRI over all voxels (`loss_all`) or only over the dropped ones;
  plus, with `cls_weight` > 0, `cls_weight * MSE(latent, feature of the paired image)` where the
  features come from the configured backend (computed once, cached on disk).
- masked brain modelling (`mask_ratio` R > 0, `--mask-ratio R`): each ROI group's voxels are cut
  into contiguous patches of `mask_patch` voxels; a random fraction R of all patches is zeroed in
  the input; MSE only on the masked voxels. No images are used. It trains on the training trials
  only (test fMRI is never seen, so that encoding results on the test set stay clean).

Several subjects of a dataset have different voxel counts, so `train.py` trains one model per
subject, one after the other, each in its own run folder.

Final file `fmri_autoencoder.pt` (model only, loaded by inference):
    {'model': state_dict, 'kind': 'fmri_autoencoder', 'model_config': Model section,
     'config': full resolved config, 'dataset', 'subject', 'roi_patch', 'roi_names', 'num_voxels',
     'norm_mean', 'norm_std', 'objective': 'autoencoder' | 'masked', 'step'}
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from datasets import load_subject, normalisation_options
from datasets.common import SubjectData
from models.checkpoints import (MINDVIS_HINT, load_mindvis_fmri_encoder, load_release_checkpoint,
                                load_state_dict_strict, safe_torch_load)
from models.fmri_autoencoder import FMRIAutoencoder
from models.image_features import build_image_features_from_config, cached_features
from models.provenance import current_features
from training.engine import Stage, TrainModule, seed_everything
from utils.config import DataConfig, FeatureConfig, FMRIConfig, build, config_from_dict, to_dict
from utils.errors import CheckpointError, ConfigError, describe
from utils.io import atomic_write_bytes

KIND = "fmri_autoencoder"
FINAL_NAME = "fmri_autoencoder.pt"
NUM_SAMPLE_TRIALS = 4      # test trials reconstructed in each sample
SAMPLE_STRIP_HEIGHT = 12   # pixels per fMRI row in the sample picture
SAMPLE_STRIP_WIDTH = 512   # voxels are resampled to this many pixel columns
SAMPLE_CLIP_STD = 3.0      # colour range of the picture: +-3 (normalised units)


# ---------------------------------------------------------------------------
# Config and data
# ---------------------------------------------------------------------------


def data_section(values: dict, source: str) -> DataConfig:
    """The typed Data section of a raw (already overridden) config dict."""
    return build(DataConfig, values.get("Data", {}), f"{source}: Data")


def load_stage_subject(data: DataConfig, subject: str, source: str) -> SubjectData:
    """Load `subject`, checking Data.roi_patch / Data.num_voxel against what the files hold."""
    subject_data = load_subject(data.dataset, data.path, subject, roi_patch=data.roi_patch, config_file=source,
                                **normalisation_options(data.dataset, data.test_normalisation, data.stats_from))
    if data.num_voxel is not None and data.num_voxel != subject_data.num_voxels:
        raise ConfigError(describe(f"{source}: Data.num_voxel for {subject}",
                                   f"the data's voxel count {subject_data.num_voxels}", data.num_voxel))
    return subject_data


def fmri_config_for(values: dict, source: str, subject: str, data: SubjectData) -> FMRIConfig:
    """Typed config for one subject; Model.roi_patch defaults to the data's ROI group sizes."""
    values = {**values, "Data": {**values.get("Data", {}), "subjects": [subject]}}
    model = dict(values.get("Model") or {})
    if model.get("roi_patch") is None:
        model["roi_patch"] = list(data.roi_patch)
    elif [int(v) for v in model["roi_patch"]] != list(data.roi_patch):
        raise ConfigError(describe(f"{source}: Model.roi_patch for {subject}",
                                   f"the data's ROI groups {list(data.roi_patch)} ({data.roi_names})",
                                   model["roi_patch"]))
    cfg = config_from_dict({**values, "Model": model}, source, kind=KIND)
    return cfg


def image_features(features: FeatureConfig, images: np.ndarray, key: str, progress: bool = True) -> torch.Tensor:
    """Features [N, dim] of uint8 images [N, H, W, 3] from the configured backend (disk-cached)."""
    extractor = build_image_features_from_config(features)
    if extractor.dim != features.dim:
        raise ConfigError(describe("Features.dim", f"the backend's feature size {extractor.dim}", features.dim))
    if features.cache_dir:
        return cached_features(extractor, images, features.cache_dir, key, progress=progress)
    with tempfile.TemporaryDirectory() as tmp:
        return cached_features(extractor, images, tmp, key, progress=progress)


class FMRITrials(Dataset):
    """Training trials: dict(fmri [1, V], feature [D] of the paired image (when given))."""

    def __init__(self, fmri: np.ndarray, image_index: np.ndarray, features: Optional[torch.Tensor]):
        self.fmri = torch.from_numpy(np.ascontiguousarray(fmri, dtype=np.float32))  # [N, V]
        self.image_index = torch.as_tensor(image_index, dtype=torch.long)  # [N]
        self.features = features

    def __len__(self) -> int:
        return len(self.fmri)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"fmri": self.fmri[i][None]}  # [1, V]
        if self.features is not None:
            item["feature"] = self.features[self.image_index[i]]  # [D]
        return item


# ---------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------


def voxel_patch_ids(roi_patch: tuple[int, ...], mask_patch: int) -> torch.Tensor:
    """Patch id of every voxel [V]: contiguous runs of `mask_patch` voxels that never cross an
    ROI boundary (an ROI's last patch may be shorter)."""
    ids, offset = [], 0
    for n in roi_patch:
        local = torch.arange(n) // mask_patch
        ids.append(local + offset)
        offset += int(local[-1]) + 1
    return torch.cat(ids)


class FMRITrainModule(TrainModule):
    """Wraps the autoencoder with the stage's objective."""

    def __init__(self, model: FMRIAutoencoder, cfg: FMRIConfig):
        super().__init__()
        self.model = model
        self.drop_rate = cfg.data.fmri_drop_rate
        self.loss_all = cfg.loss.loss_all
        self.cls_weight = cfg.loss.cls_weight
        self.mask_ratio = cfg.loss.mask_ratio
        patch_ids = voxel_patch_ids(model.config.roi_patch, cfg.loss.mask_patch)
        self.num_patches = int(patch_ids[-1]) + 1
        self.register_buffer("patch_ids", patch_ids, persistent=False)

    def forward(self, batch: dict[str, torch.Tensor], step: int):
        fmri = batch["fmri"]  # [B, 1, V]
        if self.mask_ratio > 0:
            return self._masked(fmri)
        dropped = torch.rand(fmri.shape, device=fmri.device) < self.drop_rate  # [B, 1, V]
        latent, recon = self.model(fmri.masked_fill(dropped, 0.0))
        err = (recon.float() - fmri) ** 2  # [B, 1, V]
        rec = err.mean() if self.loss_all or self.drop_rate == 0 else err[dropped].mean()
        logs = {"rec": rec.detach()}
        loss = rec
        if self.cls_weight > 0:
            cls = F.mse_loss(latent[:, 0].float(), batch["feature"].float())
            loss = loss + self.cls_weight * cls
            logs["cls"] = cls.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    def _masked(self, fmri: torch.Tensor):
        """Masked brain modelling: zero round(R * patches) random patches, MSE on their voxels."""
        B = fmri.shape[0]
        num_masked = max(1, round(self.mask_ratio * self.num_patches))
        order = torch.rand(B, self.num_patches, device=fmri.device).argsort(dim=1)  # [B, P]
        patch_masked = torch.zeros(B, self.num_patches, dtype=torch.bool, device=fmri.device)
        patch_masked.scatter_(1, order[:, :num_masked], True)
        voxel_masked = patch_masked.gather(1, self.patch_ids.expand(B, -1))[:, None]  # [B, 1, V]
        _, recon = self.model(fmri.masked_fill(voxel_masked, 0.0))
        loss = ((recon.float() - fmri) ** 2)[voxel_masked].mean()
        return loss, {"loss": loss.detach(), "rec": loss.detach()}


# ---------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------


def init_from_checkpoint(model: FMRIAutoencoder, path: str, data: SubjectData) -> str:
    """Load our `fmri_autoencoder.pt` or a release checkpoint; refuse other voxel layouts."""
    payload = safe_torch_load(path)
    if isinstance(payload, dict) and payload.get("kind") == KIND:
        saved = [int(v) for v in payload.get("roi_patch", [])]
        if saved != list(data.roi_patch):
            raise CheckpointError(describe(f"{path} (Init.checkpoint)",
                                           f"roi_patch {list(data.roi_patch)} of {data.dataset} {data.subject} "
                                           f"({data.num_voxels} voxels)",
                                           f"roi_patch {saved} ({sum(saved)} voxels)"))
        load_state_dict_strict(model, payload["model"], path)
        return f"{path}: loaded ({payload.get('objective', '?')} objective, step {payload.get('step', '?')})"
    return load_release_checkpoint(path, model).table()


def init_from_mindvis(model: FMRIAutoencoder, path: str) -> str:
    """Initialise from MinD-Vis fmri_encoder.pth; the table lists every key's shape and fate."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: MinD-Vis fmri_encoder.pth not found (Init.mindvis_ckpt); {MINDVIS_HINT}, "
                              "or set Init.mindvis_ckpt=null to train from scratch")
    return load_mindvis_fmri_encoder(path, model).table()


# ---------------------------------------------------------------------------
# Stage
# ---------------------------------------------------------------------------


class FMRIStage(Stage):
    kind = KIND

    def __init__(self, cfg: FMRIConfig, data: SubjectData, log: Callable[[str], None] = print):
        self.config = cfg
        self.data = data
        self.masked = cfg.loss.mask_ratio > 0
        self.features_used = cfg.loss.cls_weight > 0 and not self.masked
        if self.features_used and cfg.model.latent_dim != cfg.features.dim:
            raise ConfigError(describe("Model.latent_dim (the latent is tied to the image feature, "
                                       "Loss.cls_weight > 0)", f"Features.dim = {cfg.features.dim}",
                                       cfg.model.latent_dim))
        model = FMRIAutoencoder(cfg.model)
        if cfg.init.checkpoint:
            log(init_from_checkpoint(model, cfg.init.checkpoint, data))
        elif cfg.init.mindvis_ckpt:
            log(init_from_mindvis(model, cfg.init.mindvis_ckpt))
        features = None
        if self.features_used:
            key = f"{data.dataset}_{data.subject}_train_images"
            features = image_features(cfg.features, data.train_images, key, cfg.train.progress)
        self.train_set = FMRITrials(data.train_fmri, data.train_image_index, features)
        self.module = FMRITrainModule(model, cfg)
        self.test_fmri = torch.from_numpy(data.test_fmri[:NUM_SAMPLE_TRIALS].astype(np.float32))  # [n, V]

    @property
    def run_name(self) -> str:
        return f"{self.config.name}-{self.data.subject}"

    def sample(self, module: FMRITrainModule, step: int, out_dir: Path) -> None:
        """Reconstruct a few test trials from their latents: `step_XXXXXX.npz` and a PNG strip."""
        device = next(module.parameters()).device
        fmri = self.test_fmri.to(device)
        _, recon = module.model(fmri[:, None])
        recon = recon[:, 0].float().cpu()  # [n, V]
        truth = self.test_fmri
        corr = [float(np.corrcoef(t.numpy(), r.numpy())[0, 1]) for t, r in zip(truth, recon)]
        stem = out_dir / f"step_{step:06d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, fmri=truth.numpy(), recon=recon.numpy(), pearson_r=np.array(corr))
        atomic_write_bytes(stem.with_suffix(".npz"), buf.getvalue())
        atomic_write_bytes(stem.with_suffix(".png"), fmri_strip_png(truth, recon))

    def final_artifact(self, module: FMRITrainModule) -> tuple[str, dict[str, Any]]:
        d = self.data
        return FINAL_NAME, self.model_file(
            module.model, dataset=d.dataset, subject=d.subject, roi_patch=list(d.roi_patch),
            roi_names=list(d.roi_names), num_voxels=d.num_voxels, norm_mean=d.norm_mean, norm_std=d.norm_std,
            objective="masked" if self.masked else "autoencoder",
            # the features the latent is tied to (Loss.cls_weight > 0); None when it is not tied
            features=current_features(to_dict(self.config.features)) if self.features_used else None)


def fmri_strip_png(truth: torch.Tensor, recon: torch.Tensor) -> bytes:
    """PNG of measured (upper) and reconstructed (lower) voxel rows per trial, blue-white-red."""
    rows = torch.stack([truth, recon], dim=1).reshape(-1, truth.shape[1])  # [2n, V]
    rows = F.interpolate(rows[:, None], size=SAMPLE_STRIP_WIDTH, mode="linear", align_corners=False)[:, 0]
    v = (rows / SAMPLE_CLIP_STD).clamp(-1, 1).numpy()  # [2n, W]
    rgb = np.stack([1 + np.minimum(v, 0), 1 - np.abs(v), 1 - np.maximum(v, 0)], axis=-1)  # [2n, W, 3]
    rgb = np.repeat((rgb * 255).astype(np.uint8), SAMPLE_STRIP_HEIGHT, axis=0)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def stage_builders(values: dict, source: str) -> list[Callable[[Callable[[str], None]], FMRIStage]]:
    """One builder per subject of Data.subjects (voxel counts differ, so one model each)."""
    data = data_section(values, source)

    def builder(subject: str) -> Callable[[Callable[[str], None]], FMRIStage]:
        def build(log: Callable[[str], None]) -> FMRIStage:
            subject_data = load_stage_subject(data, subject, source)
            cfg = fmri_config_for(values, source, subject, subject_data)
            seed_everything(cfg.seed)
            return FMRIStage(cfg, subject_data, log)
        return build

    return [builder(s) for s in data.subjects]
