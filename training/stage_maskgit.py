"""Stage `maskgit`: train the conditional MaskGIT token transformer.

Data: the stimulus images of Data.subjects (every subject's, each image once, none of the test
images), tokenised once by the frozen tokenizer (Init.tokenizer: MaskGIT's published ImageNet-256
tokenizer as the paper does, or a tokenizer.pt of train.py) and described once by the feature
backend (Features), both cached on disk under Features.cache_dir (keyed by the image bytes and the
tokenizer file's hash). With Data.flip, the
left-right flipped images are tokenised and described too and picked with probability 0.5.

Objective (spec 4, "Training"): per image draw u ~ U(0, 1), mask ratio r = max(gamma(u),
Loss.min_mask_rate) with gamma the Loss.schedule (cosine: cos(pi u / 2)); replace floor(r * N)
random tokens (at least one) by the mask id; cross-entropy with label smoothing on the masked
tokens only. Optional condition augmentation (Loss.condition_shrink / condition_noise /
condition_drop, `augment_condition`; all 0 = the release's training): shrunk and noisy conditions
resemble features predicted from fMRI, and dropped (all-zero) conditions train the null condition
that classifier-free guidance (Sampling.guidance_scale) contrasts with.

Init.transformer starts from MaskGIT's published class-conditional ImageNet-256 transformer (every
weight but the condition projection); its taken / new / ignored table is printed and saved as
`init_weights.txt` in the run folder.

Samples: `generate()` from the features of test images, decoded by the tokenizer; PNG with the
test images on the top row and the generations below.

Final file `maskgit.pt`: {'model', 'kind': 'maskgit', 'model_config', 'config', 'tokenizer'
(path and sha256), 'features' (the Features section the conditions came from)}.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from models.checkpoints import load_release_checkpoint
from models.maskgit import MaskGITTransformer, mask_schedule
from models.provenance import current_features
from models.published import load_frozen_tokenizer, load_imagenet_transformer
from models.vqgan import VQGAN, tokenizer_input
from training.engine import Stage, TrainModule, single_stage_builders
from training.logger import save_image_grid
from training.stage_fmri import image_features
from training.stage_tokenizer import FINAL_NAME as TOKENIZER_FILE, check_image_size, stimulus_images
from utils.config import MaskGITLossConfig, MaskGITStageConfig, read_yaml, to_dict
from utils.errors import CheckpointError, ConfigError, describe
from utils.io import atomic_save_npy, file_sha256, progress_wanted, read_cache
from utils.run_files import resolve

KIND = "maskgit"
FINAL_NAME = "maskgit.pt"
NUM_SAMPLE_IMAGES = 8
TOKENIZE_BATCH = 32
CACHE_HASH_CHARS = 16
INIT_TABLE_NAME = "init_weights.txt"   # the taken / new / ignored table of Init.transformer, in the run folder


def load_tokenizer(path: str, config_file: str | None, token_grid: int) -> VQGAN:
    """The frozen tokenizer of Init.tokenizer: train.py's tokenizer.pt (or its run folder) or MaskGIT's
    published ImageNet-256 tokenizer, used unchanged (models/published.py)."""
    if not Path(path).is_file():
        raise CheckpointError(describe(f"{path} (Init.tokenizer)", "a tokenizer.pt of train.py (or its run folder), "
                                       "or MaskGIT's published ImageNet-256 tokenizer", "no such file"))
    model_section = read_yaml(config_file).get("Model") if config_file else None
    vqgan, _ = load_frozen_tokenizer(path, token_grid, model_section)
    return vqgan


@torch.no_grad()
def tokenize(vqgan: VQGAN, images: torch.Tensor, cache_dir: str | None, key: str) -> torch.Tensor:
    """Token ids [N, h*w] (long) of float images [N, 3, S, S]; cached as `<cache_dir>/<key>.npy`."""
    path = None
    if cache_dir:
        path = Path(cache_dir) / f"{key}.npy"
        cached = read_cache(path, "cached token ids", shape=(len(images), None))
        if cached is not None:
            return torch.from_numpy(cached).long()
    ids = torch.cat([vqgan.encode(images[i:i + TOKENIZE_BATCH])[1].flatten(1)  # [b, h*w]
                     for i in range(0, len(images), TOKENIZE_BATCH)])
    if path is not None:
        atomic_save_npy(path, ids.numpy().astype(np.int32))
    return ids


def tokens_digest(tokenizer_sha: str, images: np.ndarray, image_size: int) -> str:
    """Hash of the tokenizer file, the image bytes and the working resolution."""
    h = hashlib.sha256(f"{tokenizer_sha}|{images.shape}|{image_size}|".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:CACHE_HASH_CHARS]


class TokenSet(Dataset):
    """dict(tokens [N] long, condition [D]); variant 1 (flipped) with probability 0.5 when flip."""

    def __init__(self, tokens: torch.Tensor, conditions: torch.Tensor):
        self.tokens = tokens          # [V, M, N], V = 1 or 2 variants (original, flipped)
        self.conditions = conditions  # [V, M, D]

    def __len__(self) -> int:
        return self.tokens.shape[1]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        v = int(torch.randint(self.tokens.shape[0], ()))
        return {"tokens": self.tokens[v, i], "condition": self.conditions[v, i]}


def augment_condition(cond: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, loss: MaskGITLossConfig,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Training-time condition augmentation (Loss.condition_*), per row of cond [B, D]:
    shrink towards the feature mean by a factor U(1 - condition_shrink, 1), add Gaussian noise of
    U(0, condition_noise) times the per-dimension feature std, then replace the row by the null
    (all-zero) condition with probability condition_drop. mean, std: [D] over the training conditions."""
    B = cond.shape[0]

    def uniform(*shape):
        return torch.rand(*shape, generator=generator, device=cond.device)

    if loss.condition_shrink:
        keep = 1.0 - loss.condition_shrink * uniform(B, 1)  # [B, 1]
        cond = mean + keep * (cond - mean)
    if loss.condition_noise:
        level = loss.condition_noise * uniform(B, 1)  # [B, 1]
        cond = cond + level * std * torch.randn(cond.shape, generator=generator, device=cond.device)
    if loss.condition_drop:
        cond = cond.masked_fill(uniform(B, 1) < loss.condition_drop, 0.0)
    return cond


class MaskGITTrainModule(TrainModule):
    def __init__(self, model: MaskGITTransformer, cfg: MaskGITStageConfig,
                 condition_stats: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.model = model
        self.gamma = mask_schedule(cfg.loss.schedule)
        self.min_mask_rate = cfg.loss.min_mask_rate
        self.label_smoothing = cfg.loss.label_smoothing
        self.loss_cfg = cfg.loss
        mean, std = condition_stats or (torch.zeros(model.config.condition_dim), torch.ones(model.config.condition_dim))
        self.register_buffer("cond_mean", mean.float(), persistent=False)  # [D]
        self.register_buffer("cond_std", std.float(), persistent=False)  # [D]

    def forward(self, batch: dict[str, torch.Tensor], step: int):
        tokens, cond = batch["tokens"], batch["condition"]  # [B, N], [B, D]
        cond = augment_condition(cond, self.cond_mean, self.cond_std, self.loss_cfg)
        B, N = tokens.shape
        u = torch.rand(B, device=tokens.device)
        ratio = self.gamma(u).clamp_min(self.min_mask_rate)  # [B]
        num_masked = (ratio * N).floor().long().clamp(1, N)  # [B]
        rank = torch.rand(B, N, device=tokens.device).argsort(1).argsort(1)  # random rank of each position
        masked = rank < num_masked[:, None]  # [B, N]
        logits = self.model(tokens.masked_fill(masked, self.model.mask_token_id), cond)  # [B, N, K]
        loss = F.cross_entropy(logits[masked].float(), tokens[masked], label_smoothing=self.label_smoothing)
        acc = (logits[masked].argmax(-1) == tokens[masked]).float().mean()
        return loss, {"loss": loss.detach(), "masked_acc": acc.detach(), "mask_ratio": ratio.mean().detach()}


class MaskGITStage(Stage):
    kind = KIND

    def __init__(self, cfg: MaskGITStageConfig, source: str, log: Callable[[str], None] = print):
        self.config = cfg
        m = cfg.model
        if cfg.features.dim != m.condition_dim:
            raise ConfigError(describe(f"{source}: Features.dim", f"Model.condition_dim = {m.condition_dim}",
                                       cfg.features.dim))
        cfg.init.tokenizer = str(resolve(cfg.init.tokenizer, TOKENIZER_FILE))
        self.tokenizer = load_tokenizer(cfg.init.tokenizer, cfg.init.tokenizer_config, m.token_grid)
        t = self.tokenizer.config
        check_image_size(cfg.data, t, source)
        if t.token_grid != m.token_grid or t.num_codebook != m.num_codebook:
            raise ConfigError(describe(f"{source}: Model.token_grid / Model.num_codebook",
                                       f"the tokenizer's {t.token_grid} / {t.num_codebook} ({cfg.init.tokenizer})",
                                       f"{m.token_grid} / {m.num_codebook}"))
        train_u8, test_u8, _ = stimulus_images(cfg.data, source, progress_wanted(cfg.train.progress))
        variants = [train_u8, train_u8[:, :, ::-1].copy()] if cfg.data.flip else [train_u8]
        tok_hash = file_sha256(cfg.init.tokenizer)[:CACHE_HASH_CHARS]
        tokens, conds = [], []
        for v, images in enumerate(variants):
            key = f"{cfg.data.dataset}_stimuli_{'flip' if v else 'orig'}"
            pixels = tokenizer_input(images, cfg.data.image_size)
            digest = tokens_digest(tok_hash, images, cfg.data.image_size)
            tokens.append(tokenize(self.tokenizer, pixels, cfg.features.cache_dir, f"tokens_{key}_{digest}"))
            conds.append(image_features(cfg.features, images, key, cfg.train.progress))
        log(f"maskgit: {len(train_u8)} training images, {len(variants)} variant(s), "
            f"{tokens[0].shape[1]} tokens each")
        if cfg.sampling.candidates > 1:
            log(f"maskgit: Sampling.candidates={cfg.sampling.candidates} applies to LEA decoding (it scores "
                "candidates against the alignment's feature statistics); the training previews draw one sample each")
        self.train_set = TokenSet(torch.stack(tokens), torch.stack(conds).float())
        self.sample_images = tokenizer_input(test_u8[:NUM_SAMPLE_IMAGES], cfg.data.image_size)
        self.sample_conditions = image_features(cfg.features, test_u8[:NUM_SAMPLE_IMAGES],
                                                f"{cfg.data.dataset}_test_samples", cfg.train.progress).float()
        model = MaskGITTransformer(m)
        self.run_files: dict[str, str] = {}
        if cfg.init.transformer and cfg.init.checkpoint:
            raise ConfigError(describe(f"{source}: Init", "one of Init.transformer (ImageNet start) and "
                                       "Init.checkpoint (continue a decoder)", "both"))
        if cfg.init.transformer:
            table = load_imagenet_transformer(cfg.init.transformer, model).table()
            log(table)
            self.run_files[INIT_TABLE_NAME] = table + "\n"
        if cfg.init.checkpoint:
            log(load_release_checkpoint(cfg.init.checkpoint, model).table())
        flat = self.train_set.conditions.flatten(0, 1)  # [V*M, D]
        self.module = MaskGITTrainModule(model, cfg, (flat.mean(0), flat.std(0)))

    def sample(self, module: MaskGITTrainModule, step: int, out_dir: Path) -> None:
        device = next(module.parameters()).device
        s = self.config.sampling
        ids = module.model.generate(self.sample_conditions.to(device), num_samples=1, steps=s.steps,
                                    schedule=s.schedule, choice_temperature=s.choice_temperature,
                                    guidance_scale=s.guidance_scale)[:, 0]  # [B, N]
        images = self.tokenizer.to(device).decode_indices(ids).float()
        save_image_grid(torch.cat([self.sample_images.to(device), images]), out_dir / f"step_{step:06d}.png",
                        nrow=len(images))

    def final_artifact(self, module: MaskGITTrainModule) -> tuple[str, dict[str, Any]]:
        return FINAL_NAME, self.model_file(
            module.model, tokenizer={"path": self.config.init.tokenizer,
                                     "sha256": file_sha256(self.config.init.tokenizer)},
            features=current_features(to_dict(self.config.features)))


def stage_builders(values: dict, source: str) -> list[Callable[[Callable[[str], None]], MaskGITStage]]:
    return single_stage_builders(MaskGITStage, values, source)
