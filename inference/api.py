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
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from datasets import load_subject
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
                 consistency: list[dict]):
        self.pipeline = pipeline
        self.config = config
        self.data = data
        self.subject = data.subject
        self.extractor = extractor
        self.checkpoints = checkpoints
        self.heads_source = heads_source
        self.records = records
        self.consistency = consistency
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
                            config_file=source)
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
                            progress=progress)
        records = dict(weights.records)
        heads_source, align_checks = cls._attach_heads(pipeline, cfg, data, paths, records, log)
        if heads_source is not None:
            paths["align"] = heads_source
        return cls(pipeline, cfg, data, extractor, paths, heads_source, records,
                   weights.consistency + align_checks)

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
               seed: int | None = None) -> np.ndarray:
        """fMRI [T, V] (normalised) -> images uint8 [T, S, H, W, 3], S = num_samples (Sampling.num_samples).

        MaskGIT runs `steps` iterations (Sampling.steps); `seed` (default the config's SEED) makes
        the samples reproducible. Re-standardisation, when on, uses the statistics of these T trials.
        """
        sampling = dataclasses.replace(self.config.sampling,
                                       num_samples=num_samples or self.config.sampling.num_samples,
                                       steps=steps or self.config.sampling.steps)
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed if seed is None else seed)
        return self.pipeline.decode(np.asarray(fmri, dtype=np.float32), sampling, generator=generator).images

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Images uint8 [T, H, W, 3] -> predicted fMRI float32 [T, V] (normalised units)."""
        return self.pipeline.encode(np.asarray(images)).fmri.astype(np.float32)

    def evaluate(self, decoded: np.ndarray | None = None, predicted_fmri: np.ndarray | None = None,
                 classifier_weights: str | None = None, classifier=None) -> dict[str, list]:
        """The scripts' metrics on the subject's test set: {'decoding': [...], 'encoding': [...]}.

        `decoded` (uint8 [T, S, H, W, 3]) and `predicted_fmri` ([T, V]) are the outputs for every
        test trial and test image in order; each is computed here when not given. The semantic
        n-way accuracy needs `classifier_weights` (torchvision ViT-H/14) or an already loaded
        `classifier` pair from `evaluation.classifier.classifier_or_reason`; without either it is
        skipped with the reason. Each item is an `evaluation.metrics.Metric` (name, value, chance,
        skipped); `evaluation.metrics.summarize` turns a list into a dict.
        """
        from evaluation.classifier import classifier_or_reason
        from inference.run_lea import score_subject  # the scripts' scoring (run_lea imports this module)

        data = self.data
        if classifier is None:
            classifier = classifier_or_reason(classifier_weights, self.device)
        decoded = self.decode(data.test_fmri) if decoded is None else np.asarray(decoded)
        predicted_fmri = self.encode(data.test_images) if predicted_fmri is None else np.asarray(predicted_fmri)
        for name, array, rows in (("decoded", decoded, len(data.test_fmri)),
                                  ("predicted_fmri", predicted_fmri, len(data.test_images))):
            if len(array) != rows:
                raise ConfigError(describe(f"LEA.evaluate {name}", f"{rows} rows (the test set of {self.subject})",
                                           len(array)))
        return score_subject(self, decoded, predicted_fmri, *classifier)
