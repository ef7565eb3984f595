"""The Python API: LEA for one subject, loaded exactly as `LEA_GOD.py` / `LEA_BOLD.py` load it.

    from inference import LEA

    lea = LEA.from_config("configs/demo/LEA_GOD.yaml", subject="sbj_1", device="cpu")
    images = lea.decode(lea.data.test_fmri[:4])       # uint8 [4, samples, H, W, 3]
    fmri = lea.encode(lea.data.test_images[:4])       # float32 [4, voxels], normalised units
    metrics = lea.evaluate()                          # {'decoding': [Metric, ...], 'encoding': [...]}

`from_config` reads the subject's data (`lea.data`, a `datasets.common.SubjectData`), the three
networks named in the config's `Checkpoints` section (final model files of `train.py` or the
Hub-style folders beside them) and the alignment heads: loaded from `Checkpoints.align` when that
file exists, otherwise fitted on the subject's training trials (ridge, the config's `Align`
section). `from_run` re-opens a results folder of the scripts with the config and heads it used.

fMRI goes in and comes out in the loader's normalised units (the training fMRI's scalar mean and
std: `lea.data.norm_mean`, `lea.data.norm_std`); images are uint8 RGB `[N, H, W, 3]`.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from datasets import load_subject, normalisation_options
from datasets.common import SubjectData
from models.alignment import AlignmentHeads
from models.image_features import (ImageFeatureExtractor, build_image_features_from_config, cached_features,
                                   features_of)
from models.lea import LEA as Pipeline, resolve_device
from models.provenance import alignment_provenance
from inference.demo import FINAL_FILES
from inference.weights import find_alignment, load_subject_weights
from utils.config import LEAConfig, load_config, subject_path, to_dict
from utils.errors import CheckpointError, ConfigError, describe
from utils.io import file_sha256
from utils.precision import resolve_precision
from utils.run_files import resolve

FEATURE_CACHE_KEY = "stimuli"
RUN_CONFIG = "config.yaml"      # the resolved config a results folder holds
RUN_HEADS = "align.pt"          # heads fitted during a run, in its subject folder
NETWORK_KINDS = {"fmri": "fmri_autoencoder", "tokenizer": "tokenizer", "maskgit": "maskgit"}

Log = Callable[[str], None]


def checkpoint_paths(cfg: LEAConfig, subject: str) -> dict[str, Path]:
    """Weight files of `subject`; a run folder, folder of runs or run prefix means its newest final file."""
    c = cfg.checkpoints
    return {"fmri": resolve(subject_path(c.fmri, "--fmri-ckpt / Checkpoints.fmri", subject), FINAL_FILES["fmri"]),
            "tokenizer": resolve(c.tokenizer, FINAL_FILES["tokenizer"]),
            "maskgit": resolve(c.maskgit, FINAL_FILES["maskgit"]),
            "align": Path(subject_path(c.align, "--align / Checkpoints.align", subject))}


def feature_function(extractor: ImageFeatureExtractor, cache_dir: str | None, progress: bool):
    """uint8 images [N, H, W, 3] -> features [N, D], cached on disk when `cache_dir` is set."""
    def features(images: np.ndarray) -> torch.Tensor:
        if cache_dir:
            return cached_features(extractor, images, cache_dir, FEATURE_CACHE_KEY, progress=progress)
        return features_of(extractor, images)
    return features


def _quiet(_message: str) -> None:
    """The default log of the API: say nothing."""


class LEA:
    """Decoding and encoding for one subject with trained networks and alignment heads.

    Build it with `LEA.from_config(...)` or `LEA.from_run(...)`. Attributes: `config` (the
    resolved `LEAConfig`), `subject`, `data` (its `SubjectData`), `checkpoints` (the files used),
    `heads_source` (the heads file loaded, or None when they were fitted here), `records` (path,
    sha256 and kind of each weight file), `consistency` (the provenance checks between them),
    `device`, `dtype`, `pipeline` (the `models.lea.LEA` that runs the networks).
    """

    def __init__(self, pipeline: Pipeline, config: LEAConfig, data: SubjectData, extractor: ImageFeatureExtractor,
                 checkpoints: dict[str, Path], heads_source: Path | None, records: dict[str, dict],
                 consistency: list[dict], log: Log = _quiet):
        self.pipeline = pipeline
        self.config = config
        self.data = data
        self.subject = data.subject
        self.extractor = extractor
        self.checkpoints = checkpoints
        self.heads_source = heads_source
        self.records = records
        self.consistency = consistency
        self.log = log
        self.device = pipeline.device
        self.dtype = pipeline.dtype

    # -- construction ----------------------------------------------------------

    @classmethod
    def from_config(cls, config: str | Path | LEAConfig, subject: str | None = None,
                    device: str | torch.device = "auto", *, overrides: Sequence[str] = (),
                    extractor: ImageFeatureExtractor | None = None, progress: bool = False,
                    log: Log = _quiet, config_path: str | None = None) -> "LEA":
        """Load data, networks and heads for `subject` as the scripts do.

        Args:
            config: a LEA config file (`configs/LEA_GOD.yaml`, ...) or an already loaded `LEAConfig`.
            subject: one of the config's `Data.subjects` (may be omitted when it names one).
            device: 'auto' (CUDA when available), 'cpu', 'cuda' or a torch.device.
            overrides: `Section.key=value` strings, as `--set` on the command line (file configs only).
            extractor: the image-feature backend, when already built (default: from `Features`).
            progress: show progress bars.
            log: receives one line per step worth telling (e.g. `print`); silent by default.
            config_path: the file a given `LEAConfig` came from, for error messages.
        """
        if isinstance(config, LEAConfig):
            if overrides:
                raise ConfigError(describe("LEA.from_config overrides", "none with an already loaded LEAConfig "
                                           "(set its attributes instead)", list(overrides)))
            cfg, source = config, config_path or "<LEAConfig>"
        else:
            cfg, source = load_config(config, list(overrides), kind="lea"), str(config)
        subject = cls._pick_subject(cfg, subject, source)
        device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        data = load_subject(cfg.data.dataset, cfg.data.path, subject, roi_patch=cfg.data.roi_patch,
                            config_file=source, **normalisation_options(cfg.data.dataset, cfg.data.test_normalisation,
                                                                        cfg.data.stats_from))
        paths = checkpoint_paths(cfg, subject)
        for key, kind in NETWORK_KINDS.items():
            if not paths[key].exists():
                raise CheckpointError(describe(f"{source}: Checkpoints.{key}",
                                               f"an existing {kind} weight file or run folder (python train.py ...)",
                                               f"{paths[key]} missing"))
        c = cfg.checkpoints
        weights = load_subject_weights(cfg, paths, data, c.fmri_config, c.maskgit_config, log)
        extractor = extractor or build_image_features_from_config(cfg.features)
        pipeline = Pipeline(weights.fmri_ae, weights.maskgit, weights.tokenizer,
                            feature_function(extractor, cfg.features.cache_dir, progress), device=device,
                            dtype=resolve_precision(cfg.precision, device), batch_size=cfg.batch_size,
                            progress=progress, candidate_features=feature_function(extractor, None, False))
        records = dict(weights.records)
        heads_source, align_checks = cls._attach_heads(pipeline, cfg, data, paths, records, log)
        if heads_source is not None:
            paths["align"] = heads_source
        return cls(pipeline, cfg, data, extractor, paths, heads_source, records,
                   weights.consistency + align_checks, log)

    @classmethod
    def from_run(cls, run_dir: str | Path, subject: str | None = None, device: str | torch.device = "auto",
                 **kwargs) -> "LEA":
        """Re-open a results folder of `LEA_GOD.py` / `LEA_BOLD.py`: its resolved config.yaml, and the
        heads the run fitted (`<subject>/align.pt`) or loaded. Relative paths in that config are read
        from the current folder, as the run read them. Other keyword arguments: see `from_config`."""
        run_dir = Path(run_dir)
        config_file = run_dir / RUN_CONFIG
        if not config_file.is_file():
            raise ConfigError(describe(run_dir, f"a results folder of LEA_GOD.py / LEA_BOLD.py holding {RUN_CONFIG}",
                                       f"no {RUN_CONFIG}"))
        cfg = load_config(config_file, kind="lea")
        subject = cls._pick_subject(cfg, subject, str(config_file))
        fitted = run_dir / subject / RUN_HEADS
        if fitted.is_file():
            cfg.checkpoints.align = str(fitted)
        return cls.from_config(cfg, subject, device, config_path=str(config_file), **kwargs)

    @staticmethod
    def _pick_subject(cfg: LEAConfig, subject: str | None, source: str) -> str:
        if subject is not None:
            return subject
        if len(cfg.data.subjects) != 1:
            raise ConfigError(describe(f"{source}: Data.subjects", "one subject, or subject=... given",
                                       cfg.data.subjects))
        return cfg.data.subjects[0]

    @staticmethod
    def _attach_heads(pipeline: Pipeline, cfg: LEAConfig, data: SubjectData, paths: dict[str, Path],
                      records: dict[str, dict], log: Log) -> tuple[Path | None, list]:
        """Load the heads fitted on this fMRI checkpoint with these features (`inference.weights.
        find_alignment`), or fit them on the training trials when there are none.

        Returns (the heads file loaded or None when fitted here, the consistency checks of the heads);
        a loaded file is added to `records`.
        """
        subject = data.subject
        heads, align_file, align_checks = find_alignment(paths["align"], records["fmri"], cfg, log)
        if heads is not None:
            if heads.restandardize != cfg.align.restandardize:
                log(f"{subject}: {align_file} was saved with restandardize={heads.restandardize}; "
                    f"using the config's Align.restandardize={cfg.align.restandardize}")
            heads.restandardize = cfg.align.restandardize
            heads.restandardize_std = cfg.align.restandardize_std
            pipeline.heads = heads
            pipeline._check_sizes()
            records["align"] = {"path": str(align_file), "sha256": file_sha256(align_file)}
            return align_file, align_checks
        alphas = (f"alphas by {cfg.align.cv_folds}-fold CV over {cfg.align.alphas}" if cfg.align.alphas else
                  f"decode alpha {cfg.align.decode_alpha}, encode alpha {cfg.align.encode_alpha}")
        log(f"{subject}: no alignment heads at {paths['align']}; fitting them on the "
            f"{len(data.train_fmri)} training trials (ridge, {alphas})")
        pipeline.fit_alignment(data.train_fmri, data.train_images, data.train_image_index, cfg.align)
        pipeline.heads.provenance = alignment_provenance(paths["fmri"], to_dict(cfg.features))
        chosen = pipeline.heads.describe()
        log(f"{subject}: alignment alphas: decode {chosen['decode_alpha']}, encode {chosen['encode_alpha']}")
        return None, []

    # -- use -------------------------------------------------------------------

    @property
    def heads(self) -> AlignmentHeads:
        return self.pipeline._require_heads()

    def decode(self, fmri: np.ndarray, num_samples: int | None = None, steps: int | None = None,
               seed: int | None = None, candidates: int | None = None) -> np.ndarray:
        """fMRI [T, V] (normalised) -> images uint8 [T, S, H, W, 3], S = num_samples (Sampling.num_samples).

        MaskGIT runs `steps` iterations (Sampling.steps); each image is the best of `candidates`
        MaskGIT samples (Sampling.candidates, models/rerank.py); `seed` (default the config's SEED)
        makes the samples reproducible. Re-standardisation, when on, uses the statistics of these T trials.
        """
        sampling = dataclasses.replace(self.config.sampling,
                                       num_samples=num_samples or self.config.sampling.num_samples,
                                       steps=steps or self.config.sampling.steps,
                                       candidates=self.config.sampling.candidates if candidates is None else candidates)
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed if seed is None else seed)
        return self.pipeline.decode(np.asarray(fmri, dtype=np.float32), sampling, generator=generator).images

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Images uint8 [T, H, W, 3] -> predicted fMRI float32 [T, V] (normalised units)."""
        return self.pipeline.encode(np.asarray(images)).fmri.astype(np.float32)

    @property
    def features(self) -> Callable[[np.ndarray], torch.Tensor]:
        """uint8 images [N, H, W, 3] -> image features [N, D] (the config's backend, disk-cached when set)."""
        return self.pipeline.image_features

    def evaluate(self, classifier_weights: str | None = None, charts_to: str | Path | None = None) -> dict[str, list]:
        """The scripts' metric sections on the subject's test set: {'decoding': [...], 'encoding': [...], ...}.

        Decodes every test trial and encodes every test image (Sampling settings and SEED of the
        config), then scores them with `inference.evaluate.evaluate_subject`, as `LEA_GOD.py` does
        (without its stage-by-stage diagnostics). The semantic n-way accuracy needs
        `classifier_weights` (torchvision ViT-H/14); without it, it is skipped with the reason. The
        charts go to `charts_to` (default: a temporary folder, discarded). Each item is an
        `evaluation.metrics.Metric` (name, value, chance, skipped); `evaluation.metrics.summarize`
        turns a list into a dict.
        """
        from evaluation.classifier import classifier_or_reason
        from evaluation.metrics import resize_images
        from evaluation.semantic_sim import semantic_metrics_fn, semantic_scorer_or_reason
        from inference.evaluate import evaluate_subject, load_scoring_tools
        from inference.run_lea import ground_truth_file, simulator_scores  # run_lea imports this module

        cfg, data = self.config, self.data
        tools = load_scoring_tools(cfg, self.features, self.extractor.name,
                                   *classifier_or_reason(classifier_weights, self.device))
        generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        decoded = self.pipeline.decode(data.test_fmri, cfg.sampling, generator=generator)
        encoded = self.pipeline.encode(data.test_images)
        gt = resize_images(data.test_images, decoded.images.shape[2:4])     # [T, H, W, 3]
        truth = ground_truth_file(cfg.data.path, cfg.data.dataset, self.subject)
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(charts_to) if charts_to is not None else Path(scratch)
            folder.mkdir(parents=True, exist_ok=True)
            sections, _, _ = evaluate_subject(self.pipeline, data, cfg, decoded, encoded, gt, tools, folder,
                                              simulator_scores(truth, data), self.log,
                                              semantic_metrics=semantic_metrics_fn(
                                                  *semantic_scorer_or_reason(data, cfg.data.path, stimuli=gt)))
        return sections
