"""YAML -> typed, validated configuration objects.

A configuration file is read once, merged with command-line overrides
(`--set Model.embed_dim=128`), checked against the dataclass schema below and
handed down as a typed object. Unknown keys, wrong types and bad choices are
errors that name the key and the file.

File layout (release-style section names)::

    KIND: fmri_autoencoder      # fmri_autoencoder | tokenizer | maskgit | lea
    NAME: GOD_fMRI_AE
    SEED: 666
    Data:     {...}             # DataConfig
    Model:    {...}             # the network's own dataclass config (models/*.py)
    Train:    {...}             # TrainConfig
    Loss:     {...}             # the stage's loss config
    Features: {...}             # FeatureConfig (image-feature backend)
    ...

Paths in a file are kept as written; relative paths are resolved against the
working directory by the code that opens them (never against code locations).
"""
from __future__ import annotations

import dataclasses
import string
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from utils.errors import ConfigError, describe

# ---------------------------------------------------------------------------
# Section schemas shared by several stages
# ---------------------------------------------------------------------------

DATASETS = ("GOD", "BOLD5000")


@dataclass
class DataConfig:
    """Which recordings to read and how to present them."""

    dataset: Literal["GOD", "BOLD5000"] = "GOD"
    path: str = "dataset/Kamitani/npz"          # GOD: folder of sbj_*.npz; BOLD5000: dataset root
    subjects: list[str] = field(default_factory=lambda: ["sbj_1"])
    image_size: int = 256                        # images are resized to this side length
    flip: bool = True                            # random horizontal flips while training
    roi_patch: Optional[list[int]] = None        # voxels per ROI group; None = take from the data
    num_voxel: Optional[int] = None              # None = take from the data
    fmri_drop_rate: float = 0.0                  # fraction of input voxels zeroed while training
    include_test_repeats: bool = False           # also score the single (non-averaged) test trials
    test_normalisation: Literal["train", "release"] = "train"  # GOD: 'release' keeps the release's quirk
    stats_from: Literal["train", "all"] = "train"  # BOLD5000: normalisation statistics from train or all trials
    image_folder: Optional[str] = None           # tokenizer / maskgit: train on this folder's images instead


@dataclass
class TrainConfig:
    """Optimiser, schedule and bookkeeping shared by every training stage."""

    lr: float = 5e-5
    min_lr: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    warmup_steps: int = 8000
    max_steps: int = 100_000
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    batch_size: int = 8
    grad_accum: int = 1
    grad_clip: Optional[float] = 0.1
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    log_interval: int = 50
    sample_interval: int = 1000
    save_interval: int = 5000
    num_workers: int = 0
    out_dir: str = "checkpoints"
    progress: bool = True  # tqdm bars (train.py --no-progress or a non-terminal stdout turn them off)


# Train settings that say where and how a run reports (its folder, progress bars, log / sample /
# checkpoint intervals, data-loader workers), not how its weights are trained: a resumed run may
# change them, and a run that differs from a config only in them was trained by that config
REPORTING_KEYS = ("Train.out_dir", "Train.progress", "Train.log_interval", "Train.sample_interval",
                  "Train.save_interval", "Train.num_workers")


@dataclass
class FeatureConfig:
    """Image-feature backend: the condition of MaskGIT and the target of decoding."""

    backend: Literal["open_clip", "handcrafted"] = "open_clip"
    dim: int = 1024
    normalize: bool = True                       # L2-normalise features (`clip_norm`)
    model: str = "xlm-roberta-large-ViT-H-14"    # open_clip model name
    pretrained: str = "frozen_laion5b_s13b_b90k"  # open_clip pretrained tag (provenance only)
    weights: Optional[str] = None                # local weights file for open_clip
    cache_dir: Optional[str] = "checkpoints/feature_cache"


# ---------------------------------------------------------------------------
# Stage-specific sections
# ---------------------------------------------------------------------------


@dataclass
class FMRILossConfig:
    loss_all: bool = True              # reconstruction loss over all voxels (not only dropped ones)
    cls_weight: float = 0.0            # weight of the latent-to-image-feature term
    mask_ratio: float = 0.0            # >0: masked-brain-modelling pretraining on voxel patches
    mask_patch: int = 16               # voxels per masked patch in that mode


@dataclass
class FMRIInitConfig:
    mindvis_ckpt: Optional[str] = None  # MinD-Vis fmri_encoder.pth to start from
    checkpoint: Optional[str] = None    # our own or a release checkpoint to start from


@dataclass
class TokenizerLossConfig:
    rec_l1_weight: float = 1.0
    rec_l2_weight: float = 0.0
    # 1 - SSIM of the reconstruction (0 = off, the release's recipe): weighs an edge by its local
    # contrast relative to its surroundings, where the pixel terms weigh it by its contrast itself
    ssim_weight: float = 0.0
    perceptual_weight: float = 1.0     # used only when LPIPS weights are available locally
    perceptual_weights: Optional[str] = None
    codebook_weight: float = 1.0
    commitment_beta: float = 0.25
    gan_weight: float = 0.1
    disc_start: int = 0                # step at which the discriminator loss starts
    disc_channels: int = 64
    disc_layers: int = 2
    disc_lr: float = 1e-5
    disc_betas: Optional[tuple[float, float]] = None  # discriminator's Adam betas; None = Train.betas
    # Codebook use (0 = off, the release's recipe). From scratch, kmeans_iters > 0 places the codebook
    # at k-means centres of encoder outputs of training images (else at random encoder outputs);
    # every restart_interval steps, codes chosen less often than restart_min_share times the uniform
    # share (1 / num_codebook of the positions) since the last restart move to encoder outputs of the
    # current batch.
    kmeans_iters: int = 0
    restart_interval: int = 0
    restart_min_share: float = 0.25


@dataclass
class TokenizerInitConfig:
    checkpoint: Optional[str] = None   # our own, a release, or MaskGIT's published tokenizer


@dataclass
class MaskGITLossConfig:
    label_smoothing: float = 0.1
    min_mask_rate: float = 0.5
    schedule: str = "cosine"
    # Condition augmentation (off = the release's training). With probability condition_drop an
    # image's condition is replaced by the null (all-zero) condition, which classifier-free guidance
    # (Sampling.guidance_scale) needs; condition_noise adds Gaussian noise of that many times the
    # per-dimension feature std, and condition_shrink scales the condition by a random factor in
    # [1 - condition_shrink, 1], so that features predicted from fMRI (noisy, shrunk by ridge)
    # resemble what MaskGIT saw in training.
    condition_drop: float = 0.0
    condition_noise: float = 0.0
    condition_shrink: float = 0.0


@dataclass
class MaskGITInitConfig:
    checkpoint: Optional[str] = None   # our maskgit.pt (or a release transformer) to continue from
    # MaskGIT's published class-conditional ImageNet-256 transformer (release names or Flax .npz): every
    # weight but the condition projection `decoder_embed` is taken (models/published.py)
    transformer: Optional[str] = None
    # the frozen tokenizer the tokens come from: train.py's tokenizer.pt or its run folder, or MaskGIT's
    # published ImageNet-256 tokenizer (state dict in release names, or the Flax tree as .npz)
    tokenizer: str = "pretrains/MaskGIT_ImageNet256_checkpoint.pth"
    tokenizer_config: Optional[str] = None  # only for a Flax .npz tree whose architecture is not the published one


@dataclass
class SamplingConfig:
    steps: int = 11
    schedule: str = "cosine"
    choice_temperature: float = 4.5
    num_samples: int = 5
    # Classifier-free guidance: logits = cond + guidance_scale * (cond - null), with the null
    # (all-zero) condition; 0 = the release's unguided sampling, exactly.
    guidance_scale: float = 0.0
    # Best of N (models/rerank.py): each output sample is the one of `candidates` MaskGIT samples
    # whose image features agree best with the condition; 1 = the release's sampling, exactly.
    candidates: int = 1


@dataclass
class AlignConfig:
    decode_alpha: float = 500.0
    encode_alpha: float = 500.0
    decode_intercept: bool = False
    encode_intercept: bool = True
    restandardize: bool = True         # paper default: uses test-set statistics
    restandardize_std: Literal["population", "unbiased"] = "unbiased"  # the release uses torch.std (ddof 1)
    alphas: Optional[list[float]] = None  # alpha grid for cross-validation; None = fixed alphas
    cv_folds: int = 5


@dataclass
class EvalConfig:
    """What every inference run scores besides LEA itself (see docs/evaluation.md)."""

    bootstrap: int = 1000              # resamples of the test images for the 95% intervals
    ci_level: float = 0.95
    seed: int = 0                      # seed of the bootstrap and of the baselines' CV folds
    both_modes: bool = True            # also score the other re-standardisation mode
    baselines: bool = True             # ridge encoding / decoding and retrieval baselines
    baseline_alphas: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5])
    baseline_cv_folds: int = 5
    fid_weights: Optional[str] = None  # FID Inception file (pytorch-fid / torch-fidelity)
    lpips_weights: Optional[str] = None  # 'ALEXNET_FILE,LINEAR_FILE' for LPIPS AlexNet


@dataclass
class CheckpointPaths:
    """Weights of the LEA scripts. Each path may be a file, a train.py run folder, a folder of run
    folders or a run-name prefix (utils/run_files.py); `{subject}` is replaced."""

    fmri: str = "checkpoints/fmri/{subject}/fmri_autoencoder.pt"
    tokenizer: str = "pretrains/MaskGIT_ImageNet256_checkpoint.pth"
    maskgit: str = "checkpoints/maskgit/maskgit.pt"
    align: str = "checkpoints/align/{subject}/align.pt"
    fmri_config: Optional[str] = None     # stage config describing a release fMRI file (it carries none)
    maskgit_config: Optional[str] = None  # stage config describing a release decoder file (it carries none)
    accept_mismatch: list[Literal["tokenizer", "features", "align"]] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Top-level configurations, one per KIND
# ---------------------------------------------------------------------------


def _section(name: str, **kw):
    """A dataclass field read from the YAML section `name`."""
    return field(metadata={"yaml": name}, **kw)


@dataclass
class _Header:
    """Keys every configuration file has."""

    kind: str = _section("KIND", default="")
    name: str = _section("NAME", default="")
    seed: int = _section("SEED", default=666)
    data: DataConfig = _section("Data", default_factory=DataConfig)


@dataclass
class _StageHeader(_Header):
    """Keys every training stage has; `model` is the network's own dataclass (models/*.py)."""

    model: Any = _section("Model", default=None)
    train: TrainConfig = _section("Train", default_factory=TrainConfig)


@dataclass
class FMRIConfig(_StageHeader):
    kind: str = _section("KIND", default="fmri_autoencoder")
    name: str = _section("NAME", default="fmri_autoencoder")
    loss: FMRILossConfig = _section("Loss", default_factory=FMRILossConfig)
    features: FeatureConfig = _section("Features", default_factory=FeatureConfig)
    init: FMRIInitConfig = _section("Init", default_factory=FMRIInitConfig)


@dataclass
class TokenizerConfig(_StageHeader):
    kind: str = _section("KIND", default="tokenizer")
    name: str = _section("NAME", default="tokenizer")
    loss: TokenizerLossConfig = _section("Loss", default_factory=TokenizerLossConfig)
    init: TokenizerInitConfig = _section("Init", default_factory=TokenizerInitConfig)


@dataclass
class MaskGITStageConfig(_StageHeader):
    kind: str = _section("KIND", default="maskgit")
    name: str = _section("NAME", default="maskgit")
    loss: MaskGITLossConfig = _section("Loss", default_factory=MaskGITLossConfig)
    features: FeatureConfig = _section("Features", default_factory=FeatureConfig)
    sampling: SamplingConfig = _section("Sampling", default_factory=SamplingConfig)
    init: MaskGITInitConfig = _section("Init", default_factory=MaskGITInitConfig)


@dataclass
class LEAConfig(_Header):
    """Inference: decoding and encoding per subject with trained weights."""

    kind: str = _section("KIND", default="lea")
    name: str = _section("NAME", default="LEA")
    features: FeatureConfig = _section("Features", default_factory=FeatureConfig)
    sampling: SamplingConfig = _section("Sampling", default_factory=SamplingConfig)
    align: AlignConfig = _section("Align", default_factory=AlignConfig)
    checkpoints: CheckpointPaths = _section("Checkpoints", default_factory=CheckpointPaths)
    eval: EvalConfig = _section("Eval", default_factory=EvalConfig)
    precision: Literal["auto", "fp32", "bf16"] = _section("PRECISION", default="auto")
    batch_size: int = _section("BATCH_SIZE", default=16)
    out_dir: str = _section("OUT_DIR", default="results")


# Model dataclasses per KIND. Each network module registers its own (`register_model_config`),
# so this ground-floor module never imports the networks; `models/__init__.py` imports all of them.
MODEL_KINDS = ("fmri_autoencoder", "tokenizer", "maskgit")
_MODEL_SCHEMAS: dict[str, type] = {}


def register_model_config(kind: str):
    """Class decorator: the dataclass that validates the `Model:` section of configs of `kind`."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"register_model_config: kind expected one of {MODEL_KINDS}, found {kind!r}")

    def register(cls: type) -> type:
        _MODEL_SCHEMAS[kind] = cls
        return cls

    return register


def _model_schema(kind: str) -> type:
    if kind not in _MODEL_SCHEMAS:
        raise RuntimeError(f"no Model schema registered for KIND '{kind}': import the `models` package "
                           "before reading a training-stage config")
    return _MODEL_SCHEMAS[kind]


KINDS: dict[str, type] = {
    "fmri_autoencoder": FMRIConfig,
    "tokenizer": TokenizerConfig,
    "maskgit": MaskGITStageConfig,
    "lea": LEAConfig,
}

IMAGE_FOLDER_KINDS = ("tokenizer", "maskgit")   # stages that may train on a plain folder of images

# Fields a model dataclass may leave to the data (filled in after loading the data).
DATA_DERIVED_MODEL_FIELDS = ("roi_patch",)

# ---------------------------------------------------------------------------
# Building typed objects from plain dicts
# ---------------------------------------------------------------------------


def _yaml_name(f: dataclasses.Field) -> str:
    return f.metadata.get("yaml", f.name)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_number(value: Any) -> bool:
    """int/float, or a string such as '2e-3' that YAML 1.1 leaves unparsed."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


# Scalar types a config field may have: (accepts the YAML value?, what the error says was expected).
_SCALARS: dict[type, tuple[Any, str]] = {
    bool: (lambda v: isinstance(v, bool), "true/false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: _is_number(v), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against type `tp` (as written in a dataclass) and convert it."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, found {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, found {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, found {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, found {len(value)}: {value!r}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping (section), found {value!r}")
        return build(tp, value, where)
    if tp in _SCALARS:
        accepts, expected = _SCALARS[tp]
        if not accepts(value):
            raise ConfigError(f"{where}: expected {expected}, found {value!r}")
        return float(value) if tp is float else value  # YAML 1.1 reads `2e-3` as a string
    return value


def build(cls: type, values: dict, where: str = "<config>", *, allow_missing: tuple[str, ...] = ()) -> Any:
    """Construct dataclass `cls` from `values`; unknown keys and bad types are errors.

    `where` prefixes every message (the file and the key path so far).
    """
    hints = typing.get_type_hints(cls)
    fields = {_yaml_name(f): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(fields)}")
    kwargs = {}
    for yname, f in fields.items():
        if yname in values:
            kwargs[f.name] = _convert(values[yname], hints[f.name], f"{where}.{yname}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if f.name in allow_missing:
                kwargs[f.name] = ()
            else:
                raise ConfigError(f"{where}: missing required key '{yname}'")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def to_dict(obj: Any) -> Any:
    """Plain-data (YAML/JSON-ready) view of a config object, with YAML key names."""
    if dataclasses.is_dataclass(obj):
        return {_yaml_name(f): to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------
# Files and overrides
# ---------------------------------------------------------------------------


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return data


def apply_overrides(values: dict, overrides: list[str] | tuple[str, ...], source: str = "--set") -> dict:
    """Apply `Section.key=value` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source} {item!r}: expected KEY=VALUE, e.g. Model.embed_dim=128")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source} {item!r}: value is not valid YAML ({e})") from e
        node = values
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source} {item!r}: '{p}' is not a section")
        node[parts[-1]] = value
    return values


def config_from_dict(values: dict, source: str = "<config>", kind: str | None = None) -> Any:
    """Validate a plain dict (already merged with overrides) into its KIND's config object."""
    kind = kind or values.get("KIND")
    if kind not in KINDS:
        raise ConfigError(f"{source}: KIND expected one of {sorted(KINDS)}, found {kind!r}")
    values = dict(values)
    values["KIND"] = kind
    cls = KINDS[kind]
    model_values = values.pop("Model", None)
    cfg = build(cls, values, source)
    if kind in MODEL_KINDS:
        schema = _model_schema(kind)
        cfg.model = build(schema, model_values or {}, f"{source}: Model",
                          allow_missing=DATA_DERIVED_MODEL_FIELDS)
    elif model_values is not None:
        raise ConfigError(f"{source}: KIND '{kind}' has no Model section; found one")
    _check(cfg, source)
    return cfg


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (), kind: str | None = None) -> Any:
    """Read, override and validate a configuration file."""
    values = apply_overrides(read_yaml(path), overrides)
    return config_from_dict(values, str(path), kind)


SUBJECT_FIELD = "subject"
SUBJECT_TEMPLATES = ("fmri", "align")    # Checkpoints.* paths that may hold '{subject}'


def subject_path(template: str, where: str, subject: str) -> str:
    """`template` with '{subject}' replaced; ConfigError naming `where` for any other placeholder."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ConfigError(describe(where, "a path where only '{subject}' is in braces",
                                   f"{template!r} ({err})")) from None
    unknown = [name for name in fields if name != SUBJECT_FIELD]
    if unknown:
        raise ConfigError(describe(where, "a path where only '{subject}' is in braces",
                                   f"{template!r} with {{{unknown[0]}}}"))
    return template.format(subject=subject)


def _check(cfg: Any, source: str) -> None:
    """Cross-field checks that types alone cannot express."""
    checkpoints = getattr(cfg, "checkpoints", None)
    if isinstance(checkpoints, CheckpointPaths):
        for name in SUBJECT_TEMPLATES:
            subject_path(getattr(checkpoints, name), f"{source}: Checkpoints.{name}", SUBJECT_FIELD)
    data = getattr(cfg, "data", None)
    if data is not None:
        if not data.subjects:
            raise ConfigError(f"{source}: Data.subjects must name at least one subject")
        if not 0.0 <= data.fmri_drop_rate < 1.0:
            raise ConfigError(f"{source}: Data.fmri_drop_rate expected in [0, 1), found {data.fmri_drop_rate}")
        if data.image_size <= 0:
            raise ConfigError(f"{source}: Data.image_size expected > 0, found {data.image_size}")
        if data.dataset == "GOD" and data.stats_from != "train":
            raise ConfigError(f"{source}: Data.stats_from expected 'train' for GOD (the BOLD5000 option; GOD's "
                              f"release quirk is Data.test_normalisation=release), found {data.stats_from!r}")
        if data.dataset == "BOLD5000" and data.test_normalisation != "train":
            raise ConfigError(f"{source}: Data.test_normalisation expected 'train' for BOLD5000 (the GOD option; "
                              "BOLD5000's release quirk is Data.stats_from=all), "
                              f"found {data.test_normalisation!r}")
    evaluation = getattr(cfg, "eval", None)
    if evaluation is not None:
        if evaluation.bootstrap < 1 or not 0.0 < evaluation.ci_level < 1.0 or evaluation.baseline_cv_folds < 2:
            raise ConfigError(f"{source}: Eval expected bootstrap >= 1, 0 < ci_level < 1 and baseline_cv_folds >= 2, "
                              f"found {evaluation.bootstrap}, {evaluation.ci_level}, {evaluation.baseline_cv_folds}")
        if not evaluation.baseline_alphas or min(evaluation.baseline_alphas) <= 0:
            raise ConfigError(f"{source}: Eval.baseline_alphas expected a non-empty list of numbers > 0, "
                              f"found {evaluation.baseline_alphas}")
        if data.image_folder and cfg.kind not in IMAGE_FOLDER_KINDS:
            raise ConfigError(f"{source}: Data.image_folder trains only {' / '.join(IMAGE_FOLDER_KINDS)} "
                              f"(images without fMRI); KIND '{cfg.kind}' needs the dataset's recordings")
    train = getattr(cfg, "train", None)
    if train is not None:
        for name in ("batch_size", "grad_accum", "max_steps"):
            if getattr(train, name) < 1:
                raise ConfigError(f"{source}: Train.{name} expected >= 1, found {getattr(train, name)}")
        if train.lr <= 0:
            raise ConfigError(f"{source}: Train.lr expected > 0, found {train.lr}")
    loss = getattr(cfg, "loss", None)
    if isinstance(loss, FMRILossConfig) and not 0.0 <= loss.mask_ratio < 1.0:
        raise ConfigError(f"{source}: Loss.mask_ratio expected in [0, 1), found {loss.mask_ratio}")
    if isinstance(loss, MaskGITLossConfig):
        for name in ("condition_drop", "condition_shrink"):
            if not 0.0 <= getattr(loss, name) < 1.0:
                raise ConfigError(f"{source}: Loss.{name} expected in [0, 1), found {getattr(loss, name)}")
        if loss.condition_noise < 0:
            raise ConfigError(f"{source}: Loss.condition_noise expected >= 0, found {loss.condition_noise}")
    if isinstance(loss, TokenizerLossConfig):
        for name in ("kmeans_iters", "restart_interval", "restart_min_share", "ssim_weight"):
            if getattr(loss, name) < 0:
                raise ConfigError(f"{source}: Loss.{name} expected >= 0, found {getattr(loss, name)}")
    sampling = getattr(cfg, "sampling", None)
    if sampling is not None and sampling.guidance_scale < 0:
        raise ConfigError(f"{source}: Sampling.guidance_scale expected >= 0, found {sampling.guidance_scale}")
    if sampling is not None and sampling.candidates < 1:
        raise ConfigError(f"{source}: Sampling.candidates expected >= 1, found {sampling.candidates}")


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically)."""
    from utils.io import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
