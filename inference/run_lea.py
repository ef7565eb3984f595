"""Command line and per-subject engine shared by LEA_GOD.py and LEA_BOLD.py.

For every subject: load the test fMRI and stimuli, load the trained networks,
load (or fit) the alignment heads, decode every test trial into
`num_samples` images, encode every test image into predicted fMRI, score both
directions and write a new time-stamped results folder::

    <out>/<NAME>_<YYYYmmdd-HHMMSS>/
        config.yaml  metrics.json  metrics.csv  index.html
        <subject>/
            sample_image.png  sample_fmri.png  images/<trial>_gt.png, <trial>_s<k>.png
            decoded_images.npy [T, S, H, W, 3] uint8   predicted_fmri.npy [T, V] float32
            metrics.json  metrics.csv  index.html  [align.pt when the heads were fitted here]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from datasets.bold5000 import BOLD_SUBJECTS
from datasets.common import SubjectData
from datasets.god import GOD_SUBJECTS
from models.image_features import ImageFeatureExtractor, build_image_features_from_config, features_of
from models.lea import maskgit_condition_recipe, resolve_device
from models.provenance import MISMATCH_NAMES
from evaluation import metrics as M
from utils.config import LEAConfig, load_config, save_config
from inference.api import LEA, checkpoint_paths
from inference.demo import FINAL_FILES, FMRI_STAGE_CONFIGS, STAGE_CONFIGS, prepare_demo
from utils.errors import CheckpointError, ConfigError, DataError, describe
from utils.guard import RunFolders, guarded
from utils.io import atomic_save_npy, file_sha256, new_run_dir, open_npz, progress_wanted
from utils.precision import precision_name, resolve_precision
from evaluation.report import SubjectReport, write_run_report, write_subject_report
from evaluation.figures import fmri_scatter, sample_grid, save_image_files, save_png
from inference.evaluate import evaluate_subject, load_scoring_tools, n_way_for, summary_lines
from evaluation.diagnostics import FIGURE_FILE as DIAGNOSTICS_FIGURE, diagnose
from evaluation.diagnostics import NOTE as DIAGNOSTICS_NOTE
from evaluation.semantic_sim import semantic_metrics_fn, semantic_scorer_or_reason

GRID_MAX_ROWS = 20            # trials shown in sample_image.png


@dataclass(frozen=True)
class ScriptSpec:
    """What differs between LEA_GOD.py and LEA_BOLD.py."""

    script: str
    dataset: str
    subjects: tuple[str, ...]
    config: str
    demo_config: str
    fmri_train_config: str
    maskgit_train_config: str


SCRIPTS = {
    "GOD": ScriptSpec("LEA_GOD.py", "GOD", GOD_SUBJECTS, "configs/LEA_GOD.yaml", "configs/demo/LEA_GOD.yaml",
                      "configs/fMRI_TransAE_GOD.yaml", "configs/MaskGIT_GOD.yaml"),
    "BOLD5000": ScriptSpec("LEA_BOLD.py", "BOLD5000", BOLD_SUBJECTS, "configs/LEA_BOLD.yaml",
                           "configs/demo/LEA_BOLD.yaml", "configs/fMRI_TransAE_BOLD.yaml", "configs/MaskGIT_BOLD.yaml"),
}


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def build_parser(spec: ScriptSpec) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=spec.script,
        description=f"LEA on {spec.dataset}: decode test fMRI into images and encode test images into fMRI, "
                    "per subject, into a new time-stamped results folder.")
    p.add_argument("--subject", default=None,
                   help=f"one subject ({', '.join(spec.subjects)}) or 'all' "
                        "(default: the config's Data.subjects)")
    p.add_argument("--config", default=None, help=f"LEA config (default {spec.config}; {spec.demo_config} with --demo)")
    p.add_argument("--fmri-ckpt", help="fMRI autoencoder checkpoint ('{subject}' is replaced); overrides Checkpoints.fmri")
    p.add_argument("--tokenizer-ckpt", help="VQGAN tokenizer checkpoint; overrides Checkpoints.tokenizer")
    p.add_argument("--maskgit-ckpt", help="MaskGIT transformer checkpoint; overrides Checkpoints.maskgit")
    p.add_argument("--align", help="alignment heads file ('{subject}' is replaced); fitted on the training "
                                   "set and saved with the results when missing. Overrides Checkpoints.align")
    p.add_argument("--num-samples", type=int, help="images decoded per test trial (Sampling.num_samples)")
    p.add_argument("--steps", type=int, help="MaskGIT decoding steps (Sampling.steps)")
    p.add_argument("--candidates", type=int, help="each decoded image is the best of this many MaskGIT samples by "
                                                   "feature agreement with the condition (Sampling.candidates; 1 = off)")
    p.add_argument("--batch-size", type=int, help="rows per network call; generation counts trials x samples")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                   help="compute precision; auto = bf16 where the device runs it natively (recent CUDA GPUs, CPUs with "
                        "AVX512-BF16 or AMX), else fp32")
    p.add_argument("--seed", type=int, help="seed of the sampling generator (SEED)")
    p.add_argument("--out", help="results root; each run makes a new sub-folder (OUT_DIR)")
    p.add_argument("--classifier-weights", default=None,
                   help="torchvision ViT-H/14 ImageNet weights (vit_h_14_swag-80465313.pth) for the n-way "
                        "semantic accuracy; skipped without it")
    p.add_argument("--test-normalisation", choices=("train", "release"),
                   help="GOD test fMRI normalisation (Data.test_normalisation): train statistics, or the release's "
                        "quirk that leaves it in raw units")
    p.add_argument("--stats-from", choices=("train", "all"),
                   help="BOLD5000 normalisation statistics (Data.stats_from): training trials, or all trials as "
                        "the release")
    p.add_argument("--fid-weights", help="FID Inception weights file (pytorch-fid / torch-fidelity "
                                         "pt_inception-2015-12-05-6726825d.pth) for FID; skipped without it")
    p.add_argument("--lpips-weights", help="ALEXNET,LINEAR: torchvision AlexNet and the lpips v0.1 linear-layer "
                                           "files for LPIPS identification; skipped without them")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set Align.restandardize=false (repeatable)")
    p.add_argument("--accept-mismatch", action="append", default=[], choices=MISMATCH_NAMES,
                   help="use a decoder whose recorded tokenizer / features, or alignment heads whose recorded fMRI "
                        "checkpoint / features, differ from what is given (recorded in the results; repeatable)")
    p.add_argument("--demo", action="store_true",
                   help="use the demo config: simulate data and train the small demo weights when missing")
    p.add_argument("--no-progress", action="store_true",
                   help="hide progress bars, also in the training stages --demo starts (they are off "
                        "whenever stdout or stderr is not a terminal)")
    return p


def resolve_config(args: argparse.Namespace, spec: ScriptSpec) -> tuple[LEAConfig, str]:
    """Load the config with --set overrides, then apply the dedicated options."""
    path = args.config or (spec.demo_config if args.demo else spec.config)
    cfg = load_config(path, args.overrides, kind="lea")
    if cfg.data.dataset != spec.dataset:
        raise ConfigError(describe(f"{path}: Data.dataset", f"'{spec.dataset}' for {spec.script}",
                                   repr(cfg.data.dataset)))
    for option, (section, name) in {"fmri_ckpt": ("checkpoints", "fmri"), "tokenizer_ckpt": ("checkpoints", "tokenizer"),
                                    "maskgit_ckpt": ("checkpoints", "maskgit"), "align": ("checkpoints", "align"),
                                    "num_samples": ("sampling", "num_samples"), "steps": ("sampling", "steps"),
                                    "candidates": ("sampling", "candidates"),
                                    "test_normalisation": ("data", "test_normalisation"),
                                    "stats_from": ("data", "stats_from"), "fid_weights": ("eval", "fid_weights"),
                                    "lpips_weights": ("eval", "lpips_weights")}.items():
        value = getattr(args, option)
        if value is not None:
            setattr(getattr(cfg, section), name, value)
    for option, name in {"batch_size": "batch_size", "precision": "precision", "seed": "seed",
                         "out": "out_dir"}.items():
        value = getattr(args, option)
        if value is not None:
            setattr(cfg, name, value)
    for where, value in (("Sampling.num_samples (--num-samples)", cfg.sampling.num_samples),
                         ("Sampling.steps (--steps)", cfg.sampling.steps),
                         ("Sampling.candidates (--candidates)", cfg.sampling.candidates),
                         ("BATCH_SIZE (--batch-size)", cfg.batch_size)):
        if value < 1:
            raise ConfigError(describe(where, "an integer >= 1", value))
    if args.subject is not None and args.subject != "all":
        cfg.data.subjects = [args.subject]
    cfg.checkpoints.accept_mismatch = sorted(set(cfg.checkpoints.accept_mismatch) | set(args.accept_mismatch))
    cfg.checkpoints.fmri_config = cfg.checkpoints.fmri_config or spec.fmri_train_config
    cfg.checkpoints.maskgit_config = cfg.checkpoints.maskgit_config or spec.maskgit_train_config
    return cfg, path


# ---------------------------------------------------------------------------
# Files a run needs
# ---------------------------------------------------------------------------

def train_command(kind: str, spec: ScriptSpec, subject: str, demo: bool) -> str:
    """The command that trains a missing network."""
    if kind == "fmri":
        stage_config = FMRI_STAGE_CONFIGS[spec.dataset] if demo else spec.fmri_train_config
        return f"python train.py fmri --config {stage_config} --set 'Data.subjects=[{subject}]'"
    stage_config = (STAGE_CONFIGS if demo else {"tokenizer": "configs/MaskGIT_AE.yaml",
                                                "maskgit": spec.maskgit_train_config})[kind]
    return f"python train.py {kind} --config {stage_config}"


CHECKPOINT_WHAT = {"fmri": ("fMRI autoencoder", "--fmri-ckpt"),
                   "tokenizer": ("VQGAN tokenizer", "--tokenizer-ckpt"),
                   "maskgit": ("MaskGIT transformer", "--maskgit-ckpt")}


def missing_checkpoint_message(kind: str, path: Path, spec: ScriptSpec, subject: str, demo: bool) -> str:
    what, option = CHECKPOINT_WHAT[kind]
    lines = [f"{path}: {what} checkpoint{' for ' + subject if kind == 'fmri' else ''} not found "
             "(no such file, run folder or run-name prefix).",
             f"  Train it:  {train_command(kind, spec, subject, demo)}",
             f"  then pass the run folder (or its {FINAL_FILES[kind]}) with {option}."]
    if kind == "tokenizer":
        lines.append("  The paper decodes with MaskGIT's published ImageNet-256 tokenizer, unchanged: see "
                     "docs/reproduce.md.")
    if demo:
        lines.append(f"  `python {spec.script} --demo` trains every missing demo weight itself.")
    return "\n".join(lines)


def preflight(cfg: LEAConfig, spec: ScriptSpec, demo: bool) -> None:
    """Fail before any work when the data folder, a subject or a checkpoint file is missing."""
    if not Path(cfg.data.path).exists():
        raise DataError(f"{cfg.data.path}: {spec.dataset} data folder not found (Data.path). "
                        "Put the data there as described in dataset/README.md"
                        + (f", or run `python {spec.script} --demo`, which simulates it"
                           if demo else ""))
    for subject in cfg.data.subjects:
        if subject not in spec.subjects:
            raise ConfigError(describe("--subject / Data.subjects", f"one of {list(spec.subjects)} or 'all'",
                                       repr(subject)))
        for kind, path in checkpoint_paths(cfg, subject).items():
            if kind != "align" and not path.is_file():
                raise CheckpointError(missing_checkpoint_message(kind, path, spec, subject, demo))


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------

def ground_truth_file(data_path: str, dataset: str, subject: str) -> Path | None:
    """The simulator's noise-free responses for a subject, found above the data folder; None for real data."""
    for parent in [Path(data_path), *Path(data_path).parents][:4]:
        candidate = parent / "ground_truth" / dataset / f"{subject}.npz"
        if candidate.is_file():
            return candidate
    return None


def read_noise_free(path: Path, data: SubjectData) -> np.ndarray:
    """The simulator's noise-free test responses [T, V], in the loader's voxel order (raw units)."""
    with open_npz(path, "the simulator's noise-free responses") as truth:
        if "test_clean" in truth.files:                       # GOD: file columns -> loader columns
            clean = truth["test_clean"][:, truth["loader_columns"]]
        elif "image_clean" in truth.files:                    # BOLD5000: rows by image name
            row_of = {str(n): i for i, n in enumerate(truth["image_names"])}
            names = data.source.get("test_image_names", [])
            if any(n not in row_of for n in names):
                raise DataError(describe(path, "noise-free responses of every test image", "images missing"))
            clean = truth["image_clean"][[row_of[n] for n in names]]
        else:
            raise DataError(describe(path, "key 'test_clean' (GOD) or 'image_clean' (BOLD5000)",
                                     f"keys {truth.files}"))
    if clean.shape != data.test_fmri.shape:
        raise DataError(describe(path, f"noise-free test responses of shape {list(data.test_fmri.shape)}",
                                 list(clean.shape)))
    return clean


def simulator_scores(truth_path: Path | None, data: SubjectData):
    """Predicted fMRI [T, V] -> fraction of the simulator's true noise ceiling (none for recorded data)."""
    if truth_path is None:
        return lambda predicted: []
    noise_free = read_noise_free(truth_path, data)
    return lambda predicted: M.noise_ceiling_fraction(M.voxelwise_pearson(data.test_fmri, predicted), noise_free,
                                                      measured=data.test_fmri, prefix="simulator_")


# ---------------------------------------------------------------------------
# One subject
# ---------------------------------------------------------------------------

def checkpoint_record(path: Path) -> dict[str, str]:
    return {"path": str(path), "sha256": file_sha256(path)}


def run_subject(subject: str, cfg: LEAConfig, config_path: str, run_dir: Path, extractor: ImageFeatureExtractor,
                device: torch.device, dtype: torch.dtype | None, classifier, classifier_reason, progress: bool,
                log) -> SubjectReport:
    api = LEA.from_config(cfg, subject, device, extractor=extractor, progress=progress, log=log,
                          config_path=config_path)
    data, paths, records, lea, features = api.data, api.checkpoints, api.records, api.pipeline, api.features
    tools = load_scoring_tools(cfg, features, extractor.name, classifier, classifier_reason)
    folder = run_dir / subject
    folder.mkdir()
    if api.heads_source is not None:
        align_source = str(api.heads_source)
    else:
        saved = lea.heads.save(folder / "align.pt")
        records["align"] = checkpoint_record(saved)
        align_source = f"fitted on the training set, saved to {subject}/align.pt"

    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    log(f"{subject}: decoding {len(data.test_fmri)} test trials x {cfg.sampling.num_samples} samples")
    decoded = lea.decode(data.test_fmri, cfg.sampling, generator=generator)
    log(f"{subject}: encoding {len(data.test_images)} test images")
    encoded = lea.encode(data.test_images)

    images = decoded.images                                     # [T, S, H, W, 3]
    gt = M.resize_images(data.test_images, images.shape[2:4])     # [T, H, W, 3]
    atomic_save_npy(folder / "decoded_images.npy", images)
    atomic_save_npy(folder / "predicted_fmri.npy", encoded.fmri.astype(np.float32))
    save_png(folder / "sample_image.png", sample_grid(gt, images, max_rows=GRID_MAX_ROWS))
    save_png(folder / "sample_fmri.png", fmri_scatter(data.test_fmri, encoded.fmri, data.roi_names, data.roi_patch))
    save_image_files(folder / "images", gt, images)

    log(f"{subject}: scoring")
    truth = ground_truth_file(cfg.data.path, cfg.data.dataset, subject)
    scorer, semantic_reason = semantic_scorer_or_reason(data, cfg.data.path, stimuli=gt)
    log(f"{subject}: diagnostics (tokenizer round trip, decoding from true features, retrieval)")
    diag = diagnose(gt=gt, decoded=images, train_images=data.train_images, train_features=features(data.train_images),
                    predicted_features=decoded.features, true_features=encoded.features,
                    round_trip=lea.tokenizer_round_trip(data.test_images),
                    generate=lambda f: lea.generate_images(f, cfg.sampling, torch.Generator(device=device).manual_seed(
                        cfg.seed), desc="decoding true features"),
                    feature_fn=lambda x: features_of(extractor, x), backend=extractor.name,
                    n_way=n_way_for(len(gt)), scorer=scorer, semantic_reason=semantic_reason)
    save_png(folder / DIAGNOSTICS_FIGURE, diag.figure)
    metrics, eval_settings, charts = evaluate_subject(
        lea, data, cfg, decoded, encoded, gt, tools, folder, simulator_scores(truth, data), log,
        semantic_metrics=semantic_metrics_fn(scorer, semantic_reason), extra={"diagnostics": diag.metrics})
    settings = {
        "dataset": data.dataset, "subject": subject, "num_test_trials": int(len(data.test_fmri)),
        "num_voxels": data.num_voxels, "roi_names": data.roi_names, "roi_patch": data.roi_patch,
        "num_samples": cfg.sampling.num_samples, "steps": cfg.sampling.steps,
        "schedule": cfg.sampling.schedule, "choice_temperature": cfg.sampling.choice_temperature,
        "guidance_scale": cfg.sampling.guidance_scale,
        "maskgit_condition_training": maskgit_condition_recipe(paths["maskgit"]),
        "guidance_note": ("classifier-free guidance with the null (all-zero) condition" if cfg.sampling.guidance_scale
                          else "off: unguided sampling (the release's)"),
        "candidates": cfg.sampling.candidates,
        "candidates_note": (f"each sample is the best of {cfg.sampling.candidates} MaskGIT samples by the agreement of "
                            "its image features with the condition (cosine of training-standardised features)"
                            if cfg.sampling.candidates > 1 else "off: one MaskGIT sample per output (the release's)"),
        "seed": cfg.seed, "device": str(device), "precision": precision_name(dtype),
        "feature_backend": extractor.describe(),
        "alignment": {**lea.heads.describe(), "source": align_source},
        "restandardize": cfg.align.restandardize, "restandardize_std": cfg.align.restandardize_std,
        "test_normalisation": cfg.data.test_normalisation, "stats_from": cfg.data.stats_from,
        **eval_settings,
        "consistency": api.consistency,
        "accepted_mismatches": list(cfg.checkpoints.accept_mismatch),
        "restandardize_note": ("on: predicted latents are z-scored over the test set (uses test-set statistics)"
                               if cfg.align.restandardize else "off: no test-set statistics are used"),
        "predicted_fmri_units": ("normalised with the training fMRI's scalar mean/std "
                                 f"(mean {data.norm_mean:.6g}, std {data.norm_std:.6g}); "
                                 "multiply by std and add mean for the recorded units"),
        "metric_image_size": list(images.shape[2:4]),
        "ground_truth_resized": list(data.test_images.shape[1:3]) != list(images.shape[2:4]),
        "noise_free_responses": str(truth) if truth else None,
        "semantic_accuracy": (f"simulated attributes from {scorer.source}; classifier fitted on the training stimuli"
                              if scorer else semantic_reason),
        "diagnostics": DIAGNOSTICS_NOTE,
        "data_source": data.source,
    }
    files = {"ground truth and decoded samples": "sample_image.png",
             "stage by stage: stimulus, tokenizer round trip, decoded from true features, retrieval, LEA":
                 DIAGNOSTICS_FIGURE,
             "measured vs predicted fMRI per ROI": "sample_fmri.png",
             "decoded_images.npy": "decoded_images.npy", "predicted_fmri.npy": "predicted_fmri.npy",
             **charts, "per-image PNGs": "images/", "metrics.csv": "metrics.csv", "metrics.json": "metrics.json"}
    if (folder / "align.pt").is_file():
        files["alignment heads"] = "align.pt"
    report = SubjectReport(subject=subject, dataset=data.dataset, folder=subject, metrics=metrics,
                           settings=settings, checkpoints=records, files=files, tables=[diag.table()])
    write_subject_report(folder, report, cfg.name)
    return report


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

HEADLINE_PER_SECTION = 4      # console: the first metrics with a value and a chance level of each section
HEADLINE_SKIP = ("sim_attribute_accuracy_", "encoding_pearson_", "encoding_mse")  # per-attribute / per-ROI details
HEADLINE_KEEP = ("encoding_pearson_mean",)


def headline(report: SubjectReport) -> str:
    """The main numbers for the console: semantic accuracy first, then the stage table."""
    lines = []
    for section in ("decoding", "encoding"):
        shown = [m for m in report.metrics[section] if m.value is not None and m.chance is not None
                 and (m.name in HEADLINE_KEEP or not m.name.startswith(HEADLINE_SKIP))]
        lines.append("; ".join(f"{m.name} {m.value:.3f} (chance {m.chance:.3f})"
                               for m in shown[:HEADLINE_PER_SECTION]))
    for table in report.tables:
        columns = table["columns"][1:]
        lines.append(f"{table['title']}:")
        width = max(len(row[0]) for row in table["rows"])
        for row in table["rows"]:
            cells = [f"{c} {v}" for c, v in zip(columns, row[1:]) if v not in ("–", "skipped")]
            lines.append(f"  {row[0]:<{width}} " + ", ".join(cells))
    return "\n  ".join(lines)


def rerun_hint(run_dir: Path) -> str:
    """How to go on after an unfinished run: run again, reusing alignment heads it already fitted."""
    fitted = sorted(run_dir.glob("*/align.pt"))
    reuse = f"; add --align {run_dir}/{{subject}}/align.pt to reuse the heads fitted for " \
            f"{', '.join(p.parent.name for p in fitted)}" if fitted else ""
    return f"run the command again (a new results folder is made; {run_dir} is kept as it is){reuse}"


def run(args: argparse.Namespace, spec: ScriptSpec, argv: Sequence[str], folders: RunFolders) -> Path:
    started = time.time()
    cfg, config_path = resolve_config(args, spec)
    progress = progress_wanted(not args.no_progress)
    log = print
    if args.demo:
        prepare_demo(cfg, spec, progress=progress, log=log)
    preflight(cfg, spec, args.demo)
    device = resolve_device(args.device)
    dtype = resolve_precision(cfg.precision, device)
    extractor = build_image_features_from_config(cfg.features)
    from evaluation.classifier import classifier_or_reason  # torchvision models: imported only here

    classifier, classifier_reason = classifier_or_reason(args.classifier_weights, device)
    run_dir = new_run_dir(cfg.out_dir, cfg.name)
    folders.started(run_dir, lambda: rerun_hint(run_dir))
    save_config(cfg, run_dir / "config.yaml")
    reports = []
    for subject in cfg.data.subjects:
        reports.append(run_subject(subject, cfg, config_path, run_dir, extractor, device, dtype,
                                   classifier, classifier_reason, progress, log))
        log(f"{subject}: {headline(reports[-1])}")
        for line in summary_lines(subject, reports[-1].metrics, reports[-1].settings["headline_mode"].split(":")[0]):
            log(line)
    run_info = {"script": spec.script, "config": config_path, "subjects": list(cfg.data.subjects),
                "restandardize": cfg.align.restandardize, "restandardize_std": cfg.align.restandardize_std,
                "test_normalisation": cfg.data.test_normalisation, "stats_from": cfg.data.stats_from,
                "device": str(device), "precision": precision_name(dtype),
                "seconds": round(time.time() - started, 1), "command": " ".join(["python", spec.script, *argv])}
    write_run_report(run_dir, reports, cfg.name, run_info)
    folders.finished(run_dir)
    log(f"done in {time.time() - started:.0f} s")
    log(f"results: {run_dir}  (open {run_dir / 'index.html'})")
    return run_dir


def main(argv: Sequence[str] | None = None, dataset: str = "GOD") -> int:
    spec = SCRIPTS[dataset]
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(spec).parse_args(argv)
    return guarded(lambda folders: run(args, spec, argv, folders), spec.script)
