"""The LEA pipeline over trained networks: decoding (fMRI -> images) and encoding (image -> fMRI).

    decoding:  fMRI [T, V] -> E_f -> z_f [T, Df] -> W_d -> z_i [T, Di] -> MaskGIT -> tokens -> VQGAN -> images
    encoding:  images -> image features z_i [T, Di] -> W_e -> z_f [T, Df] -> D_f -> fMRI [T, V]

The fMRI encoder runs once per trial; the whole test set is aligned in one call
(re-standardisation takes its statistics over the test set); generation runs one
batched `generate` call per chunk of trials x samples. Ground-truth images are
never tokenised.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from tqdm import tqdm

from models.alignment import AlignmentHeads
from models.checkpoints import load_state_dict_strict, safe_torch_load
from models.hub import CONFIG_NAME, read_config
from models.fmri_autoencoder import FMRIAutoencoder, FMRIAutoencoderConfig
from models.maskgit import MaskGITConfig, MaskGITTransformer
from models.rerank import best_candidates, take_kept
from models.vqgan import VQGAN, VQGANConfig, tokenizer_input
from utils.config import AlignConfig, SamplingConfig, build
from utils.errors import CheckpointError, ConfigError, DataError, describe
from utils.precision import autocast

UINT8_MAX = 255

# images uint8 [N, H, W, 3] -> features [N, Di] (float32, CPU)
FeatureFn = Callable[[np.ndarray], torch.Tensor]


# checkpoint kind (as train.py writes it) -> (network, its config dataclass)
NETWORKS = {"fmri_autoencoder": (FMRIAutoencoder, FMRIAutoencoderConfig),
            "tokenizer": (VQGAN, VQGANConfig),
            "maskgit": (MaskGITTransformer, MaskGITConfig)}
MODEL_FILE_KEYS = ("model", "kind", "model_config")


def load_trained_network(kind: str, path: str | Path, expect: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """Build and strictly load a network from a final model file of `train.py`, or from the
    Hub-style folder written beside it (`Network.from_pretrained`; its config.json holds the same records).

    The file is `{'model': state_dict, 'kind': kind, 'model_config': Model section, ...}`,
    read with `torch.load(weights_only=True)`. `expect`: values the file must record when it
    records them (e.g. {'dataset': 'GOD', 'subject': 'sbj_1'}); a different one is an error even
    when the shapes happen to fit.
    """
    if Path(path).is_dir():
        check_expected(read_config(path, kind), expect, Path(path) / CONFIG_NAME)
        return NETWORKS[kind][0].from_pretrained(path)
    return network_from_payload(kind, safe_torch_load(path), path, expect)


def network_from_payload(kind: str, payload: Any, path: str | Path,
                         expect: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """`load_trained_network` on a file already read (`payload`) from `path`."""
    if not isinstance(payload, dict) or any(k not in payload for k in MODEL_FILE_KEYS):
        found = sorted(payload)[:10] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(describe(path, f"a model file written by train.py (keys {list(MODEL_FILE_KEYS)})",
                                       found))
    if payload["kind"] != kind:
        raise CheckpointError(describe(f"{path} key 'kind'", repr(kind), repr(payload["kind"])))
    check_expected(payload, expect, path)
    network, config_cls = NETWORKS[kind]
    try:
        config = build(config_cls, dict(payload["model_config"]), f"{path} key 'model_config'")
    except ConfigError as err:
        raise CheckpointError(str(err)) from err
    model = network(config)
    load_state_dict_strict(model, payload["model"], path)
    return model.eval()


def check_expected(records: Mapping[str, Any], expect: Mapping[str, Any] | None, where: str | Path) -> None:
    """CheckpointError when `records` (a model file or config.json) holds another value than `expect`."""
    for key, value in (expect or {}).items():
        if key in records and records[key] != value:
            raise CheckpointError(describe(f"{where} key '{key}'", f"{value!r} (the {key} this run uses)",
                                           f"{records[key]!r}: this network was trained for another {key}"))


CONDITION_AUGMENTATION_KEYS = ("condition_drop", "condition_noise", "condition_shrink")


def maskgit_condition_recipe(path: str | Path) -> dict:
    """How a MaskGIT model file was trained to take its condition: the Loss.condition_* values of
    its training config (absent keys, e.g. in files from before these options, count as 0 = off)
    and its Model.condition path ('prefix', the release's, when absent).
    A Hub-style folder's config.json holds the same training config."""
    payload = read_config(path, "maskgit") if Path(path).is_dir() else safe_torch_load(path)
    config = (payload.get("config") or {}) if isinstance(payload, dict) else {}
    loss = config.get("Loss") or {}
    recipe = {k: float(loss.get(k, 0.0)) for k in CONDITION_AUGMENTATION_KEYS}
    recipe["note"] = ("condition augmentation on (noise / shrink / drop as listed)" if any(recipe.values())
                      else "off: the release's training (no condition noise, no condition dropout)")
    recipe["condition_path"] = (config.get("Model") or {}).get("condition", "prefix")
    return recipe


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu' / 'cuda' as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError(describe("--device", "'cpu' or 'auto' (no CUDA device is visible)", "'cuda'"))
    return torch.device(name)


def check_fmri_fits(model: FMRIAutoencoder, roi_patch: list[int], checkpoint: str, subject: str) -> None:
    """CheckpointError unless the fMRI autoencoder's ROI groups are the subject's."""
    trained = list(model.config.roi_patch)
    if trained != list(roi_patch):
        raise CheckpointError(
            f"{checkpoint}: fMRI autoencoder was trained for {sum(trained)} voxels (ROI groups {trained}), "
            f"but subject {subject} has {sum(roi_patch)} voxels (ROI groups {list(roi_patch)}); "
            f"use the checkpoint trained on {subject}")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [0, 1] (clipped) -> uint8 [B, H, W, 3]."""
    pixels = images.float().clamp(0, 1).mul(UINT8_MAX).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()  # [B, H, W, 3]


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@dataclass
class DecodeResult:
    images: np.ndarray            # uint8 [T, S, H, W, 3]
    fmri_latents: torch.Tensor    # [T, Df] E_f of each trial
    features: torch.Tensor        # [T, Di] predicted image features (the MaskGIT condition)


@dataclass
class EncodeResult:
    fmri: np.ndarray              # float32 [T, V], in the normalised units of the training fMRI
    features: torch.Tensor        # [T, Di] image features of the stimuli
    fmri_latents: torch.Tensor    # [T, Df] predicted latents


class LEA:
    """Decoding and encoding with trained networks and alignment heads.

    Args:
        fmri_ae: the subject's fMRI autoencoder (E_f, D_f).
        maskgit: conditional token transformer; its condition size is the feature size.
        tokenizer: VQGAN whose decoder turns token ids into images.
        image_features: images uint8 [N, H, W, 3] -> features [N, Di].
        candidate_features: the same for generated candidates (`Sampling.candidates` > 1), e.g.
            without the disk cache; default `image_features`.
        heads: alignment heads (fitted or loaded); None until `fit_alignment`.
        device: where the networks run.
        dtype: autocast compute type (torch.bfloat16), or None for float32
            (`utils.precision.resolve_precision`).
        batch_size: rows per network call (trials x samples for generation).
        progress: show tqdm bars.
    """

    def __init__(self, fmri_ae: FMRIAutoencoder, maskgit: MaskGITTransformer, tokenizer: VQGAN,
                 image_features: FeatureFn, heads: AlignmentHeads | None = None,
                 device: torch.device = torch.device("cpu"), dtype: torch.dtype | None = None,
                 batch_size: int = 16, progress: bool = True, candidate_features: FeatureFn | None = None):
        self.fmri_ae = fmri_ae.to(device).eval()
        self.maskgit = maskgit.to(device).eval()
        self.tokenizer = tokenizer.to(device, memory_format=torch.channels_last).eval()  # faster convs
        self.image_features = image_features
        self.candidate_features = candidate_features or image_features
        self.heads = heads
        self.device = device
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))
        self.progress = progress
        self._check_sizes()

    def _check_sizes(self) -> None:
        """The networks must agree on feature size and token grid."""
        cond = self.maskgit.config.condition_dim
        codebook = self.tokenizer.config.num_codebook
        if self.maskgit.config.num_codebook != codebook:
            raise CheckpointError(describe("MaskGIT checkpoint", f"a codebook of {codebook} entries "
                                           "(the tokenizer's)", self.maskgit.config.num_codebook))
        if self.maskgit.config.token_grid != self.tokenizer.config.token_grid:
            raise CheckpointError(describe("MaskGIT checkpoint", f"a {self.tokenizer.config.token_grid}^2 "
                                           "token grid (the tokenizer's)", f"{self.maskgit.config.token_grid}^2"))
        if self.heads is not None and self.heads.decoder.out_dim != cond:
            raise CheckpointError(describe("alignment heads", f"image features of size {cond} "
                                           "(the MaskGIT condition)", self.heads.decoder.out_dim))

    def _bar(self, iterable, desc: str, total: int):
        return tqdm(iterable, desc=desc, total=total, disable=not self.progress, leave=False)

    @torch.no_grad()
    def fmri_latents(self, fmri: np.ndarray) -> torch.Tensor:
        """fMRI [N, V] (normalised) -> latents z_f [N, Df] (float32, CPU); one encoder pass per row."""
        x = torch.as_tensor(np.asarray(fmri, dtype=np.float32))
        return self._batched(self.fmri_ae.encode, x, "fMRI encoder")  # [N, Df]

    def _batched(self, network: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor,
                 desc: str) -> torch.Tensor:
        """Apply `network` ([B, ...] -> [B, 1, D]) in chunks of batch_size rows: [N, D] float32 on the CPU."""
        out = []
        steps = list(_chunks(len(rows), self.batch_size))
        for sl in self._bar(steps, desc, len(steps)):
            with autocast(self.device, self.dtype):
                y = network(rows[sl].to(self.device))  # [B, 1, D]
            out.append(y[:, 0].float().cpu())  # [B, D]
        return torch.cat(out)  # [N, D]

    def fit_alignment(self, train_fmri: np.ndarray, train_images: np.ndarray,
                      train_image_index: np.ndarray, align: AlignConfig) -> AlignmentHeads:
        """Fit W_d and W_e on the training set: E_f of every trial paired with its image's features."""
        latents = self.fmri_latents(train_fmri)  # [N, Df]
        features = self.image_features(train_images)  # [M, Di]
        paired = features[torch.as_tensor(train_image_index, dtype=torch.long)]  # [N, Di]
        self.heads = AlignmentHeads.from_config(align).fit(latents.double(), paired.double())
        self._check_sizes()
        return self.heads

    def _require_heads(self) -> AlignmentHeads:
        if self.heads is None:
            raise CheckpointError("alignment heads are neither loaded nor fitted; call fit_alignment first")
        return self.heads

    @torch.no_grad()
    def decode(self, fmri: np.ndarray, sampling: SamplingConfig,
               generator: torch.Generator | None = None) -> DecodeResult:
        """Test fMRI [T, V] -> `sampling.num_samples` images per trial, uint8 [T, S, H, W, 3]."""
        heads = self._require_heads()
        latents = self.fmri_latents(fmri)  # [T, Df]
        features = heads.decode(latents.double()).float()  # [T, Di], whole test set at once
        images = self.generate_images(features, sampling, generator=generator)
        return DecodeResult(images=images, fmri_latents=latents, features=features)

    @torch.no_grad()
    def generate_images(self, features: torch.Tensor, sampling: SamplingConfig,
                        generator: torch.Generator | None = None, desc: str = "decoding") -> np.ndarray:
        """Image features [T, Di] (the MaskGIT condition) -> `sampling.num_samples` images each,
        uint8 [T, S, H, W, 3]. With `sampling.candidates` K > 1 every sample is the best of K
        (models/rerank.py), scored against the training images' feature statistics of the heads."""
        samples, k = sampling.num_samples, sampling.candidates
        if k < 1:
            raise ConfigError(describe("Sampling.candidates", "an integer >= 1", k))
        stats = self._require_heads().stats if k > 1 else None
        trials_per_call = max(1, self.batch_size // (samples * k))
        steps = list(_chunks(len(features), trials_per_call))
        images = []
        for sl in self._bar(steps, desc, len(steps)):
            cond = features[sl].float().to(self.device)  # [b, Di]
            with autocast(self.device, self.dtype):
                tokens = self.maskgit.generate(cond, num_samples=samples * k, steps=sampling.steps,
                                               schedule=sampling.schedule,
                                               choice_temperature=sampling.choice_temperature,
                                               generator=generator,
                                               guidance_scale=sampling.guidance_scale)  # [b, S*K, N]
                pixels = self.tokenizer.decode_indices(tokens.flatten(0, 1))  # [b*S*K, 3, H, W]
            batch = to_uint8(pixels)  # [b*S*K, H, W, 3]
            batch = batch.reshape(len(cond), samples, k, *batch.shape[1:])  # [b, S, K, H, W, 3]
            keep = torch.zeros(len(cond), samples, dtype=torch.long)  # [b, S]: the only candidate
            if k > 1:
                cand = self.candidate_features(batch.reshape(-1, *batch.shape[3:]))  # [b*S*K, Di]
                keep = best_candidates(cand.reshape(len(cond), samples, k, -1), cond.cpu(),
                                       stats["image_mean"], stats["image_std"])  # [b, S]
            images.append(take_kept(batch, keep))  # [b, S, H, W, 3]
        return np.concatenate(images)

    @torch.no_grad()
    def tokenizer_round_trip(self, images: np.ndarray) -> np.ndarray:
        """Stimuli uint8 [N, H, W, 3] at any size -> tokens -> images uint8 [N, R, R, 3], R the tokenizer's
        resolution (what the tokenizer keeps). The stimuli are resized to R as the tokenizer was trained
        on them (models/vqgan.py `tokenizer_input`), not as the evaluation resizes its ground truth."""
        out = []
        size = self.tokenizer.config.resolution
        steps = list(_chunks(len(images), self.batch_size))
        for sl in self._bar(steps, "tokenizer round trip", len(steps)):
            x = tokenizer_input(images[sl], size).to(self.device, memory_format=torch.channels_last)  # [b, 3, R, R]
            with autocast(self.device, self.dtype):
                _, indices = self.tokenizer.encode(x)  # [b, h, w]
                pixels = self.tokenizer.decode_indices(indices)  # [b, 3, H, W]
            out.append(to_uint8(pixels))
        return np.concatenate(out)

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> EncodeResult:
        """Stimuli uint8 [T, H, W, 3] -> predicted fMRI [T, V] (normalised units)."""
        heads = self._require_heads()
        features = self.image_features(images)  # [T, Di]
        latents = heads.encode(features.double()).float()  # [T, Df], whole test set at once
        fmri = self._batched(self.fmri_ae.decode, latents, "fMRI decoder")  # [T, V]
        return EncodeResult(fmri=fmri.numpy(), features=features, fmri_latents=latents)
