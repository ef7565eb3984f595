"""Scoring of one subject's LEA run: both inference modes, baselines, noise ceiling, intervals, charts.

Sections of a subject's metrics (see docs/evaluation.md for every name):
- `decoding`, `encoding`: LEA in the headline mode (`Align.restandardize`:
  on = `transductive`, the paper's re-standardisation with test-set statistics;
  off = `leakage_free`, training statistics only);
- `decoding_<other mode>`, `encoding_<other mode>`: LEA in the other mode
  (`Eval.both_modes`), decoded with the same seed;
- `baselines`: voxel-wise ridge encoding, ridge decoding scored in feature space,
  and retrieval of the nearest training image (`Eval.baselines`);
- `single_trials`: with `Data.include_test_repeats`, decoding in feature space
  and encoding r against every single test trial.
Every metric gets a bootstrap interval over the test images (or the reason it has
none) and identification accuracies an exact binomial p-value.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from datasets.common import SubjectData
from evaluation import metrics as M
from evaluation.baselines import VoxelwiseRidge
from evaluation.ceiling import RepeatStats, repeat_stats
from evaluation.charts import identification_curve, n_way_curve, roi_bars
from evaluation.encoding_eval import CEILING_NAME, ceiling_metrics, encoding_scores
from evaluation.figures import save_png
from evaluation.perceptual import fid_features_or_reason, lpips_or_reason
from evaluation.release_metrics import fid_per_sample, stack_ssim
from evaluation.retrieval import nearest_training_images
from evaluation.uncertainty import attach_uncertainty, bootstrap_indices
from models.lea import LEA
from utils.config import LEAConfig
from utils.errors import DataError

MODES = {True: "transductive", False: "leakage_free"}
MODE_NOTES = {"transductive": "re-standardised with test-set statistics (the paper's and the release's default)",
              "leakage_free": "no test-set statistics: ridge predictions used as they are"}
PAIRWISE_PIXEL_SCORES = ("mse", "pcc", "ssim", "snr")
CHART_ROI_FILE = "encoding_roi.png"
CHART_ID_FILE = "identification_curve.png"
DEFAULT_N_WAY = 50
NO_REPEATS = "needs the single test trials (GOD arr_1, BOLD5000 repeated presentations); none were loaded"


@dataclass
class ScoringTools:
    """The networks and functions the metrics need, loaded once per run."""

    features: Callable[[np.ndarray], torch.Tensor]   # uint8 images [N, H, W, 3] -> [N, D]
    backend: str                                       # feature backend name, prefixes feature metrics
    classifier: Any
    classifier_reason: str | None
    fid_features: Any
    fid_reason: str | None
    lpips: Any
    lpips_reason: str | None


def load_scoring_tools(cfg: LEAConfig, features, backend: str, classifier, classifier_reason) -> ScoringTools:
    fid_features, fid_reason = fid_features_or_reason(cfg.eval.fid_weights)
    lpips, lpips_reason = lpips_or_reason(cfg.eval.lpips_weights)
    return ScoringTools(features, backend, classifier, classifier_reason, fid_features, fid_reason,
                        lpips, lpips_reason)


def n_way_for(count: int) -> int | None:
    """n of the n-way accuracies: the paper's 50, at most the number of items; None below 3 items."""
    return min(DEFAULT_N_WAY, count) if count >= 3 else None


def _renamed(metrics: list[M.Metric], prefix: str) -> list[M.Metric]:
    for metric in metrics:
        metric.name = prefix + metric.name
    return metrics


def feature_space_metrics(gt_feats, pred_feats, name: str) -> list[M.Metric]:
    """Pair-wise and n-way identification (Pearson r) in the image-feature space, with the best sample."""
    out = [M.feature_identification(gt_feats, pred_feats, "pcc", name=f"{name}_pairwise_pcc")]
    n = n_way_for(len(gt_feats))
    if n is not None:
        n_way = M.feature_n_way_top1(gt_feats, pred_feats, n, "pcc", name=f"{name}_{n}way_top1_pcc")
        out += [n_way] + ([M.best_sample(n_way)] if n_way.details["n_samples"] > 1 else [])
    return out


def decoding_metrics(gt: np.ndarray, images: np.ndarray, predicted_feats: torch.Tensor,
                     stimulus_feats: torch.Tensor, tools: ScoringTools) -> list[M.Metric]:
    """Decoding metrics of images `[T, S, H, W, 3]` against `gt [T, H, W, 3]` (the decoded size).

    predicted_feats `[T, D]` (the MaskGIT condition) are scored against the stimuli's features.
    """
    classifier = M.classifier_n_way(gt, images, tools.classifier, skip_reason=tools.classifier_reason)
    out = [classifier, M.best_sample(classifier)]
    decoded_feats = tools.features(images.reshape(-1, *images.shape[2:])).reshape(*images.shape[:2], -1)  # [T, S, D]
    out += feature_space_metrics(tools.features(gt), decoded_feats, tools.backend)
    out += feature_space_metrics(stimulus_feats, predicted_feats, f"predicted_{tools.backend}")
    out += [M.pairwise_identification(gt, images, score) for score in PAIRWISE_PIXEL_SCORES]
    out.append(M.lpips_identification(gt, images, tools.lpips) if tools.lpips is not None
               else M.skipped("pairwise_lpips", tools.lpips_reason, M.PAIRWISE_CHANCE))
    out.append(M.fid(gt, images, tools.fid_features) if tools.fid_features is not None
               else M.skipped("fid", tools.fid_reason))
    out += [fid_per_sample(gt, images, tools.fid_features, tools.fid_reason), stack_ssim(gt, images)]
    return out


def _mode_label(restandardize: bool) -> str:
    return MODES[bool(restandardize)]


def _encoding(data: SubjectData, predicted: np.ndarray, stats: RepeatStats | None, indices: np.ndarray,
              level: float, no_ceiling: str = NO_REPEATS) -> list[M.Metric]:
    return encoding_scores(data.test_fmri, predicted, data.roi_patch, data.roi_names, stats, indices, level,
                           n_way_for(len(data.test_fmri)), no_ceiling)


def baseline_metrics(data: SubjectData, lea: LEA, cfg: LEAConfig, gt: np.ndarray, stimulus_feats: torch.Tensor,
                     stats: RepeatStats | None, indices: np.ndarray, tools: ScoringTools
                     ) -> tuple[list[M.Metric], dict[str, Any], dict[str, np.ndarray]]:
    """Ridge encoding, ridge decoding and retrieval with LEA's image features and splits."""
    ev = cfg.eval
    train_feats = lea.image_features(data.train_images).double().numpy()        # [M, D]
    paired = train_feats[data.train_image_index]                                 # [N_train, D]
    test_feats = stimulus_feats.double().numpy()                                 # [T, D]
    encoder = VoxelwiseRidge(ev.baseline_alphas, ev.baseline_cv_folds, ev.seed).fit(paired, data.train_fmri)
    predicted_fmri = encoder.predict(test_feats)                                 # [T, V]
    decoder = VoxelwiseRidge(ev.baseline_alphas, ev.baseline_cv_folds, ev.seed).fit(data.train_fmri, paired)
    predicted_feats = decoder.predict(data.test_fmri)                            # [T, D]
    nearest = nearest_training_images(predicted_feats, train_feats)[:, 0]        # [T]
    retrieved = M.resize_images(data.train_images[nearest], gt.shape[1:3])       # [T, H, W, 3]

    out = _renamed(_encoding(data, predicted_fmri, stats, indices, ev.ci_level), "ridge_")
    out += feature_space_metrics(test_feats, predicted_feats, f"ridge_decoding_{tools.backend}")
    out += feature_space_metrics(test_feats, train_feats[nearest], f"retrieval_{tools.backend}")
    out += _renamed([M.pairwise_identification(gt, retrieved, s) for s in PAIRWISE_PIXEL_SCORES], "retrieval_")
    info = {"ridge_encoding": encoder.describe(), "ridge_decoding": decoder.describe(),
            "retrieval": "nearest training image by Pearson r of the ridge-decoded features",
            "retrieved_training_images": nearest.tolist()}
    return out, info, {"fmri": predicted_fmri, "features": predicted_feats, "retrieved_features": train_feats[nearest]}


def single_trial_metrics(data: SubjectData, lea: LEA, encoded_fmri: np.ndarray, stimulus_feats: torch.Tensor,
                         backend: str, seed: int, n_boot: int, level: float) -> list[M.Metric]:
    """LEA on every single test trial: feature-space decoding (no image generation) and encoding r.

    Decoding: each trial's predicted feature identifies its image among the N test
    images (pair-wise and top-1 of N); in the transductive mode the re-standardisation
    runs over the R single trials. Encoding: the predicted fMRI of each image against
    every single trial of it (voxel-wise r over the R trials). The identification
    rates get intervals over the test images (each image's rate pools its trials).
    """
    if data.test_fmri_repeats is None or data.test_repeat_index is None:
        return [M.skipped("single_trials", NO_REPEATS)]
    trials, index = data.test_fmri_repeats, data.test_repeat_index
    feats = lea.heads.decode(lea.fmri_latents(trials).double()).float().numpy()     # [R, D]
    target = stimulus_feats.double().numpy()                                         # [N, D]
    scores = M.feature_scores(target, _by_image(feats, index, len(target)), "pcc")   # [N, k, N]
    out = [M._rate_metric(f"single_trial_predicted_{backend}_pairwise_pcc",
                          M.pairwise_rates(scores, True), M.PAIRWISE_CHANCE),
           M._rate_metric(f"single_trial_predicted_top1_of_{len(target)}_pcc",
                          (M.rival_counts(scores) == 0).astype(np.float64), 1.0 / len(target))]
    out += _renamed(M.encoding_pearson(trials, encoded_fmri[index], data.roi_patch, data.roi_names),
                    "single_trial_")
    attach_uncertainty(out, bootstrap_indices(len(target), n_boot, seed), level)
    return out


def _by_image(feats: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Single-trial rows `[R, D]` grouped by image into `[N, k, D]` (k = fewest trials of any image)."""
    k = int(np.bincount(index, minlength=n).min())
    return np.stack([feats[index == i][:k] for i in range(n)])


def _chart_values(metrics: list[M.Metric], prefix: str, groups: list[str]) -> tuple[list[float], list]:
    by = {m.name: m for m in metrics}
    values, cis = [], []
    for g in groups:
        m = by.get(f"{prefix}encoding_pearson_{'mean' if g == 'all' else g}")
        values.append(m.value if m is not None and m.value is not None else float("nan"))
        cis.append(m.details.get(M.CI_KEY) if m is not None else None)
    return values, cis


def draw_charts(folder: Path, data: SubjectData, sections: dict[str, list[M.Metric]],
                curves_from: dict[str, tuple[np.ndarray, np.ndarray]], headline: str) -> dict[str, str]:
    """encoding_roi.png and identification_curve.png in the subject folder; returns {caption: file}."""
    groups = ["all", *data.roi_names]
    models, intervals = {}, {}
    for label, section, prefix in ((f"LEA {headline}", "encoding", ""), ("ridge baseline", "baselines", "ridge_")):
        if section in sections:
            models[label], intervals[label] = _chart_values(sections[section], prefix, groups)
    other = [s for s in sections if s.startswith("encoding_")]
    for section in other:
        models[f"LEA {section[len('encoding_'):]}"], intervals[f"LEA {section[len('encoding_'):]}"] = \
            _chart_values(sections[section], "", groups)
    by = {m.name: m for m in sections["encoding"]}
    ceiling = [by[f"{CEILING_NAME}{'' if g == 'all' else '_' + g}"].value or float("nan") for g in groups]
    save_png(folder / CHART_ROI_FILE, roi_bars(groups, models, ceiling, intervals))
    curves = {label: n_way_curve(M.rival_counts(M.feature_scores(target, pred, "pcc")), len(target) - 1)
              for label, (target, pred) in curves_from.items()}
    save_png(folder / CHART_ID_FILE, identification_curve(curves))
    return {"encoding r per ROI with noise ceiling and baseline": CHART_ROI_FILE,
            "identification accuracy against n-way": CHART_ID_FILE}


def evaluate_subject(lea: LEA, data: SubjectData, cfg: LEAConfig, decoded, encoded, gt: np.ndarray,
                     tools: ScoringTools, folder: Path, simulator_metrics: Callable[[np.ndarray], list[M.Metric]],
                     log, semantic_metrics: Callable[[np.ndarray], list[M.Metric]] | None = None,
                     extra: dict[str, list[M.Metric]] | None = None
                     ) -> tuple[dict[str, list[M.Metric]], dict[str, Any], dict[str, str]]:
    """All metric sections of one subject, the settings to report with them, and the chart files.

    `semantic_metrics` (decoded images -> metrics, `semantic_sim.semantic_metrics_fn`) lead the decoding
    section of every mode scored. `extra` metrics computed elsewhere are put first in their section and
    get intervals too.
    """
    semantic = semantic_metrics or (lambda images: [])
    ev = cfg.eval
    n = len(data.test_fmri)
    indices = bootstrap_indices(n, ev.bootstrap, ev.seed)
    stats, no_ceiling = None, NO_REPEATS
    if data.test_fmri_repeats is not None and data.test_repeat_index is not None:
        try:
            stats = repeat_stats(data.test_fmri_repeats, data.test_repeat_index, n)
        except DataError as err:
            no_ceiling = f"no noise ceiling from the single test trials: {err}"
            log(f"{data.subject}: {no_ceiling}")
    headline = _mode_label(lea.heads.restandardize)
    stimulus_feats = encoded.features                                            # [T, D] of the stimuli
    sections = {"decoding": semantic(decoded.images) + decoding_metrics(gt, decoded.images, decoded.features,
                                                                         stimulus_feats, tools),
                "encoding": (ceiling_metrics(stats, data.roi_patch, data.roi_names, data.num_voxels, indices,
                                             ev.ci_level, no_ceiling)
                             + _encoding(data, encoded.fmri, stats, indices, ev.ci_level, no_ceiling)
                             + simulator_metrics(encoded.fmri))}
    curves = {f"LEA predicted features ({headline})": (stimulus_feats.numpy(), decoded.features.numpy()),
              f"LEA encoded fMRI ({headline})": (data.test_fmri, encoded.fmri)}
    modes = [headline]
    if ev.both_modes:
        other = _mode_label(not lea.heads.restandardize)
        log(f"{data.subject}: scoring the {other} mode too ({MODE_NOTES[other]})")
        lea.heads.restandardize = not lea.heads.restandardize
        try:
            generator = torch.Generator(device=lea.device).manual_seed(cfg.seed)
            dec_other = lea.decode(data.test_fmri, cfg.sampling, generator=generator)
            enc_other = lea.encode(data.test_images)
        finally:
            lea.heads.restandardize = not lea.heads.restandardize
        sections[f"decoding_{other}"] = semantic(dec_other.images) + decoding_metrics(
            gt, dec_other.images, dec_other.features, stimulus_feats, tools)
        sections[f"encoding_{other}"] = _encoding(data, enc_other.fmri, stats, indices, ev.ci_level, no_ceiling)
        modes.append(other)
    settings: dict[str, Any] = {"headline_mode": f"{headline}: {MODE_NOTES[headline]}", "modes_scored": modes,
                                "bootstrap": {"resamples": ev.bootstrap, "level": ev.ci_level, "seed": ev.seed,
                                              "over": "test images"}}
    if ev.baselines:
        log(f"{data.subject}: fitting the ridge baselines (alphas by {ev.baseline_cv_folds}-fold CV)")
        sections["baselines"], settings["baselines"], predicted = baseline_metrics(
            data, lea, cfg, gt, stimulus_feats, stats, indices, tools)
        curves["ridge decoding"] = (stimulus_feats.numpy(), predicted["features"])
        curves["retrieval"] = (stimulus_feats.numpy(), predicted["retrieved_features"])
        curves["ridge encoding"] = (data.test_fmri, predicted["fmri"])
    if cfg.data.include_test_repeats:
        sections["single_trials"] = single_trial_metrics(data, lea, encoded.fmri, stimulus_feats, tools.backend,
                                                         ev.seed, ev.bootstrap, ev.ci_level)
    for name, metrics in (extra or {}).items():
        sections[name] = list(metrics) + sections.get(name, [])
    for name, section in sections.items():
        if name != "single_trials":
            attach_uncertainty(section, indices, ev.ci_level)
    files = draw_charts(folder, data, sections, curves, headline)
    return sections, settings, files


def summary_lines(subject: str, sections: dict[str, list[M.Metric]], headline: str) -> list[str]:
    """Console lines: LEA against the baselines and the ceiling, then one line per skipped metric."""
    by = {f"{s}:{m.name}": m for s, ms in sections.items() for m in ms}

    def show(key: str) -> str:
        m = by.get(key)
        if m is None or m.value is None:
            return "n/a"
        ci = m.details.get(M.CI_KEY)
        return f"{m.value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    lines = [f"{subject}: headline mode {headline}; encoding mean r LEA {show('encoding:encoding_pearson_mean')}, "
             f"ridge {show('baselines:ridge_encoding_pearson_mean')}, noise ceiling "
             f"{show(f'encoding:{CEILING_NAME}')}; fraction of ceiling LEA {show('encoding:fraction_of_ceiling')}, "
             f"ridge {show('baselines:ridge_fraction_of_ceiling')}"]
    by_suffix = {f"{s}:{m.name}": m for s, ms in sections.items() for m in ms}
    ways = sorted(k[:-len("pairwise_pcc")] for k in by_suffix
                  if k.startswith("decoding:predicted_") and k.endswith("_pairwise_pcc"))
    for prefix in ways:  # 'decoding:predicted_<backend>_'
        backend = prefix[len("decoding:predicted_"):]
        lines.append(f"{subject}: feature-space pair-wise identification: LEA predicted features "
                     f"{show(prefix + 'pairwise_pcc')}, LEA decoded images {show(f'decoding:{backend}pairwise_pcc')}, "
                     f"ridge decoding {show(f'baselines:ridge_decoding_{backend}pairwise_pcc')}, retrieval "
                     f"{show(f'baselines:retrieval_{backend}pairwise_pcc')} (chance 0.5)")
    for section in ("decoding", *[s for s in sections if s.startswith(("decoding_", "encoding_"))]):
        if section in sections:
            shown = [f"{m.name} {show(f'{section}:{m.name}')}" for m in sections[section]
                     if m.value is not None and m.chance is not None and not m.name.endswith("_best_sample")][:4]
            lines.append(f"{subject}: {section}: " + "; ".join(shown))
    seen = set()
    for section, metrics in sections.items():
        for m in metrics:
            if m.value is None and (m.name, m.skipped) not in seen:
                seen.add((m.name, m.skipped))
                lines.append(f"{subject}: skipped {m.name} ({section}): {m.skipped}")
    return lines
