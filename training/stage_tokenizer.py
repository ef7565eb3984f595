"""Stage `tokenizer`: train the VQGAN that turns images into MaskGIT tokens.

Loss per step (Loss section):
    rec_l1_weight * |x - x_hat| + rec_l2_weight * (x - x_hat)^2 + ssim_weight * (1 - SSIM(x, x_hat))
  + codebook_weight * codebook + commitment_beta * commitment
  + [step >= disc_start] * (gan_weight * -D(x_hat) + hinge(D))
where hinge(D) = relu(1 - D(x)) + relu(1 + D(sg(x_hat))) trains the patch discriminator
(models/discriminator.py) and the generator term is computed with the discriminator's weights
detached, so each term reaches only its own network. The discriminator has its own learning rate
(Loss.disc_lr) and betas (Loss.disc_betas) on the same schedule, and each network's gradient is
clipped on its own. From scratch, the codebook starts at encoder outputs of training images
(init_codebook_from_data), or at their k-means centres (Loss.kmeans_iters > 0); codes chosen less
than Loss.restart_min_share times the uniform share in Loss.restart_interval steps restart at
encoder outputs of the current batch
(training/codebook.py). The log reports codes used, the perplexity of the batch's codes and the
batch's mean SSIM (`ssim_index`), whether or not the SSIM term is on. A perceptual (LPIPS) term is
not available: the project has no LPIPS network, so it is reported off once.

Init.checkpoint: our `tokenizer.pt`, or MaskGIT's published tokenizer (see models/checkpoints.py).

Final file `tokenizer.pt`: {'model': VQGAN state_dict, 'kind': 'tokenizer', 'model_config',
'config', 'resolution', 'token_grid'}.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.data import Dataset

from datasets.common import SubjectData
from datasets.image_folder import load_image_folder
from evaluation.metrics import SSIM_K1, SSIM_K2, SSIM_WINDOW
from models.checkpoints import load_maskgit_vqgan, load_state_dict_strict, safe_torch_load
from models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from models.vqgan import VQGAN, VQGANConfig, tokenizer_input
from training.codebook import CodebookMonitor, kmeans_codebook, usage_stats
from training.engine import Stage, TrainModule, single_stage_builders
from training.logger import save_image_grid
from training.optim import param_groups
from training.stage_fmri import load_stage_subject
from utils.config import DataConfig, TokenizerConfig, TrainConfig, to_dict
from utils.errors import CheckpointError, ConfigError, DataError, describe
from utils.io import progress_wanted

KIND = "tokenizer"
FINAL_NAME = "tokenizer.pt"
NUM_SAMPLE_IMAGES = 8


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------


def _unique_images(arrays: list[np.ndarray], exclude: set[bytes] = frozenset()) -> tuple[np.ndarray, set[bytes]]:
    """The images of `arrays` (uint8 [N, H, W, 3] each), each distinct image once, in first-seen order,
    leaving out those whose digest is in `exclude`; also returns the digests kept."""
    kept, seen = [], set()
    for images in arrays:
        for image in images:
            digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest()
            if digest not in seen and digest not in exclude:
                seen.add(digest)
                kept.append(image)
    return np.stack(kept), seen


def folder_images(data: DataConfig, progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[SubjectData]]:
    """Data.image_folder: its distinct images; the last NUM_SAMPLE_IMAGES are held out as samples."""
    images, _ = _unique_images([load_image_folder(data.image_folder, data.image_size, progress)])
    if len(images) <= NUM_SAMPLE_IMAGES:
        raise DataError(describe(f"{data.image_folder} (Data.image_folder)",
                                 f"more than {NUM_SAMPLE_IMAGES} distinct images", len(images)))
    return images[:-NUM_SAMPLE_IMAGES], images[-NUM_SAMPLE_IMAGES:], []


def stimulus_images(data: DataConfig, source: str,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[SubjectData]]:
    """Train and test images (uint8) over Data.subjects: each distinct image once (subjects share
    stimuli), and no test image among the training images (a BOLD5000 subject's training images may
    hold another's test images). With Data.image_folder, that folder's images instead (folder_images)."""
    if data.image_folder:
        return folder_images(data, progress)
    subjects = [load_stage_subject(data, s, source) for s in data.subjects]
    test, test_digests = _unique_images([d.test_images for d in subjects])
    train, _ = _unique_images([d.train_images for d in subjects], exclude=test_digests)
    return train, test, subjects


class ImageSet(Dataset):
    """dict(image [3, S, S] in [0, 1]), flipped left-right with probability 0.5 when `flip`."""

    def __init__(self, images: torch.Tensor, flip: bool):
        self.images = images  # [N, 3, S, S]
        self.flip = flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = self.images[i]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return {"image": image}


def check_image_size(data: DataConfig, vqgan: VQGANConfig, where: str) -> None:
    if data.image_size != vqgan.resolution:
        raise ConfigError(describe(f"{where}: Data.image_size", f"the tokenizer's resolution {vqgan.resolution}",
                                   data.image_size))


# ---------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------


def ssim_index(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of `[B, C, S, S]` images in [0, 1] over channels and windows (differentiable), with
    the SSIM metric's windows and constants (evaluation/metrics.py) for a data range of 1.

    Each window's term compares local means, contrasts and correlation relative to the window's
    own contrast, so a faint edge on a flat background counts nearly as much as a strong one,
    where the pixel terms weigh it by its contrast squared (L2) or its contrast (L1)."""
    def local_mean(z: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(z, SSIM_WINDOW, stride=1)                  # [B, C, S-6, S-6]

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x * mu_x
    var_y = local_mean(y * y) - mu_y * mu_y
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
                / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)))
    return ssim_map.mean()


class TokenizerTrainModule(TrainModule):
    """VQGAN (generator) + patch discriminator, one backward per step. Each network has its own
    Adam groups (Loss.disc_lr, Loss.disc_betas), its own gradient clipping and its own objective
    (the generator term sees the discriminator's weights detached, the hinge term sees the
    reconstruction detached), i.e. two optimisers stepping together."""

    def __init__(self, vqgan: VQGAN, disc: PatchDiscriminator, cfg: TokenizerConfig):
        super().__init__()
        self.vqgan = vqgan
        self.disc = disc
        self.loss_cfg = cfg.loss
        self.monitor = CodebookMonitor(cfg.model.num_codebook)

    def optimizer_groups(self, train: TrainConfig) -> list[dict]:
        groups = param_groups(self.vqgan.named_parameters(), self.vqgan, train.weight_decay)
        return groups + param_groups(self.disc.named_parameters(), self.disc, train.weight_decay,
                                     lr=self.loss_cfg.disc_lr, betas=self.loss_cfg.disc_betas)

    def clip_groups(self) -> list[list[torch.nn.Parameter]]:
        return [list(self.vqgan.parameters()), list(self.disc.parameters())]

    def after_step(self, step: int) -> None:
        interval = self.loss_cfg.restart_interval
        if interval and step % interval == 0:
            self.monitor.restart_dead(self.vqgan, self.loss_cfg.restart_min_share)

    def forward(self, batch: dict[str, torch.Tensor], step: int):
        c = self.loss_cfg
        image = batch["image"]  # [B, 3, S, S]
        recon, codebook, commitment, indices = self.vqgan(image)
        recon = recon.float()
        rec = c.rec_l1_weight * (recon - image).abs().mean() + c.rec_l2_weight * ((recon - image) ** 2).mean()
        ssim = ssim_index(recon if c.ssim_weight else recon.detach(), image)  # logged either way
        if step >= c.disc_start:
            frozen = {k: v.detach() for k, v in self.disc.named_parameters()}
            g_adv = -functional_call(self.disc, frozen, (recon,)).float().mean()
            d_hinge = (F.relu(1.0 - self.disc(image).float()).mean()
                       + F.relu(1.0 + self.disc(recon.detach()).float()).mean())
        else:  # before disc_start the discriminator is not run; zero terms keep its grads defined (DDP)
            g_adv = torch.zeros((), device=image.device)
            d_hinge = sum(p.sum() for p in self.disc.parameters()) * 0.0
        loss = (rec + c.ssim_weight * (1.0 - ssim) + c.codebook_weight * codebook
                + c.commitment_beta * commitment + c.gan_weight * g_adv + d_hinge)
        self.monitor.observe(indices, image)
        used, perplexity = usage_stats(torch.bincount(indices.flatten(), minlength=self.vqgan.config.num_codebook))
        return loss, {"loss": loss.detach(), "rec": rec.detach(), "codebook": codebook.detach(),
                      "commitment": commitment.detach(), "g_adv": g_adv.detach(), "d_hinge": d_hinge.detach(),
                      "codes_used": torch.tensor(float(used)), "perplexity": torch.tensor(perplexity),
                      "codes_restarted": torch.tensor(float(self.monitor.restarted)),
                      "ssim_index": ssim.detach()}


# ---------------------------------------------------------------------------
# Initialisation and stage
# ---------------------------------------------------------------------------


def load_tokenizer_weights(model: VQGAN, path: str) -> str:
    """Our `tokenizer.pt` (its Model section must match) or MaskGIT's published tokenizer."""
    if Path(path).suffix != ".npz" and Path(path).is_file():
        payload = safe_torch_load(path)
        if isinstance(payload, dict) and payload.get("kind") == KIND:
            saved, current = payload.get("model_config"), to_dict(model.config)
            if saved != current:
                raise CheckpointError(describe(f"{path}: Model section", str(current), str(saved)))
            load_state_dict_strict(model, payload["model"], path)
            return f"{path}: tokenizer loaded"
    return load_maskgit_vqgan(path, model).table()


@torch.no_grad()
def init_codebook_from_data(vqgan: VQGAN, images: torch.Tensor) -> None:
    """From-scratch start: codebook rows = encoder outputs at random positions of random training
    images, so that every code starts near the data (a randomly placed codebook collapses to a
    handful of codes)."""
    k = vqgan.config.num_codebook
    picked = images[torch.randperm(len(images))[:min(len(images), k)]]  # [n, 3, S, S]
    z = vqgan.encoder(picked)  # [n, D, h, w]
    vectors = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # [n*h*w, D]
    rows = torch.randint(len(vectors), (k,)) if len(vectors) < k else torch.randperm(len(vectors))[:k]
    vqgan.quantizer.embedding.weight.copy_(vectors[rows])


class TokenizerStage(Stage):
    kind = KIND

    def __init__(self, cfg: TokenizerConfig, source: str, log: Callable[[str], None] = print):
        self.config = cfg
        check_image_size(cfg.data, cfg.model, source)
        train_images, test_images, _ = stimulus_images(cfg.data, source, progress_wanted(cfg.train.progress))
        vqgan = VQGAN(cfg.model)
        self.train_set = ImageSet(tokenizer_input(train_images, cfg.data.image_size), cfg.data.flip)
        if cfg.init.checkpoint:
            log(load_tokenizer_weights(vqgan, cfg.init.checkpoint))
        elif cfg.loss.kmeans_iters:
            kmeans_codebook(vqgan, self.train_set.images, cfg.loss.kmeans_iters)
        else:
            init_codebook_from_data(vqgan, self.train_set.images)
        if cfg.loss.perceptual_weight > 0:
            log("tokenizer: perceptual (LPIPS) loss is off: the project has no LPIPS network "
                f"(Loss.perceptual_weight={cfg.loss.perceptual_weight} ignored)")
        disc = PatchDiscriminator(PatchDiscriminatorConfig(in_ch=cfg.model.in_ch, channels=cfg.loss.disc_channels,
                                                           n_layers=cfg.loss.disc_layers))
        self.module = TokenizerTrainModule(vqgan, disc, cfg)
        self.sample_images = tokenizer_input(test_images[:NUM_SAMPLE_IMAGES], cfg.data.image_size)

    def sample(self, module: TokenizerTrainModule, step: int, out_dir: Path) -> None:
        """Test images (top row) and their reconstructions (bottom row) as one PNG."""
        images = self.sample_images.to(next(module.parameters()).device)
        recon = module.vqgan(images)[0].float()
        save_image_grid(torch.cat([images, recon]), out_dir / f"step_{step:06d}.png", nrow=len(images))

    def final_artifact(self, module: TokenizerTrainModule) -> tuple[str, dict[str, Any]]:
        return FINAL_NAME, self.model_file(module.vqgan, resolution=self.config.model.resolution,
                                           token_grid=self.config.model.token_grid)


def stage_builders(values: dict, source: str) -> list[Callable[[Callable[[str], None]], TokenizerStage]]:
    return single_stage_builders(TokenizerStage, values, source)
