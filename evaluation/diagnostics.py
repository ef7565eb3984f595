"""Stage-by-stage diagnostics of decoding: which stage of the chain loses what.

Beside LEA's decoding (fMRI -> predicted features -> MaskGIT -> tokenizer), every
results folder scores the same test stimuli through shorter chains:

- `stimuli`: the test stimuli themselves -> the semantic classifier's ceiling;
- `tokenizer_round_trip`: stimulus -> tokenizer encode -> decode -> what the tokenizer keeps;
- `true_features_readout`: a linear read-out of each attribute from the stimulus's true image
  features (no image drawn) -> what the MaskGIT condition carries;
- `decoded_from_true_features`: MaskGIT conditioned on the stimulus's *true* image features
  -> what the image side can do;
- `predicted_features_readout`: the same read-out from the features *predicted* from fMRI
  -> what the alignment carries, whatever is drawn from it;
- `retrieval_baseline`: the training image nearest to the *predicted* features -> what the
  alignment alone carries as a picture;
- `lea_decoded`: LEA's decoding from fMRI (the run's result).

The two read-out stages score features, not images: only the semantic accuracy (simulated
data; the read-out is fitted on the training stimuli's features, evaluation/semantic_sim.py).
A read-out above the images drawn from the same features says the drawing loses what the
features carry. A linear read-out is a lower bound on what they carry: where the test
categories also occur in training, retrieval can name more.

Each stage gets pair-wise and n-way identification in the image-feature space,
pair-wise pixel-PCC identification, the simulated-data semantic accuracy
(evaluation/semantic_sim.py; skipped on recorded data; per attribute too, in the metric
files: `<stage>/sim_attribute_accuracy_shape`, ...), and, where a stage draws
several samples per trial, their diversity: the mean feature distance
(1 - Pearson r) between samples of one trial divided by the mean distance between
different test stimuli (0 = identical samples; about 1 = samples as different as
different stimuli). Metrics are named `<stage>/<metric>`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable

import numpy as np
import torch
from PIL import Image

from evaluation import metrics as M
from evaluation.figures import column_grid
from evaluation.retrieval import retrieve_images
from evaluation.semantic_sim import SemanticScorer
from utils.errors import DataError, describe

STAGES = {  # key -> caption in the table (and in the figure, for the stages that draw images)
    "stimuli": "test stimuli (ceiling)",
    "tokenizer_round_trip": "tokenizer round trip",
    "true_features_readout": "true features, read-out (no image)",
    "decoded_from_true_features": "decoded from true features",
    "predicted_features_readout": "predicted features, read-out (no image)",
    "retrieval_baseline": "retrieval (nearest training image)",
    "lea_decoded": "LEA decoded from fMRI",
}
READOUT_STAGES = ("true_features_readout", "predicted_features_readout")
FIGURE_CAPTIONS = {"stimuli": "stimulus", "tokenizer_round_trip": "tokenizer",
                   "decoded_from_true_features": "true feat", "retrieval_baseline": "retrieval",
                   "lea_decoded": "LEA"}
FIGURE_SAMPLES = 2           # samples per stage shown in diagnostics.png
FIGURE_MAX_ROWS = 20
DIVERSITY = "sample_diversity"
PER_ATTRIBUTE = "sim_attribute_accuracy_"   # per-attribute metrics: in the metric files, not the stage table
FIGURE_FILE = "diagnostics.png"
NOTE = ("metrics '<stage>/<name>' score the stimuli through shorter chains: tokenizer round trip, MaskGIT from the "
        "true image features (sampled as LEA's decoding is, best of N included), the training image nearest to "
        "the predicted features (retrieval), LEA from fMRI; '*_features_readout' is a linear read-out of each "
        "attribute from the true / predicted features themselves (simulated data); "
        "sample_diversity = feature distance between samples of a trial / distance between different stimuli")

FeatureFn = Callable[[np.ndarray], torch.Tensor]   # uint8 [N, H, W, 3] -> [N, D]


@dataclass
class Diagnostics:
    """Metrics per stage, the stage table (rows: stages, columns: metric names) and the figure."""

    metrics: list[M.Metric]
    table_columns: list[str]
    table_rows: dict[str, dict[str, M.Metric]]
    backend: str                               # feature backend (prefix of the feature metric names)
    figure: Image.Image | None = None
    stage_images: dict[str, np.ndarray] = field(default_factory=dict)

    def table(self) -> dict:
        """The stage table for index.html (evaluation/report.py summary-table form)."""
        chance = {}
        for row in self.table_rows.values():
            for name, m in row.items():
                chance.setdefault(name, m.chance)
        rows = [[STAGES[stage], *(_cell(row.get(c)) for c in self.table_columns)]
                for stage, row in self.table_rows.items()]
        rows.append(["chance", *(_fmt(chance[c]) for c in self.table_columns)])
        return {"title": "where information is lost: decoding stage by stage",
                "columns": ["stage", *(short(c, self.backend) for c in self.table_columns)], "rows": rows}


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _cell(metric: M.Metric | None) -> str:
    if metric is None:
        return "–"
    return "skipped" if metric.value is None else _fmt(metric.value)


def short(name: str, backend: str) -> str:
    """A table column name: the feature backend prefix becomes 'feature_', pixel scores get 'pixel_'."""
    if name.startswith(f"{backend}_"):
        return "feature_" + name[len(backend) + 1:]
    return "pixel_" + name if name.startswith("pairwise_") else name


def sample_diversity(features: torch.Tensor, gt_features: torch.Tensor) -> M.Metric:
    """features [T, S, D] of S samples per trial, gt_features [T, D] of the stimuli -> diversity metric."""
    t, s = features.shape[:2]
    if s < 2:
        return M.skipped(DIVERSITY, "one sample per trial")
    unit = M.unit_rows(features.double().numpy(), centre=True)  # [T, S, D]
    within = np.mean([1.0 - (unit[:, a] * unit[:, b]).sum(-1) for a, b in combinations(range(s), 2)], axis=0)  # [T]
    g = M.unit_rows(gt_features.double().numpy(), centre=True)  # [T, D]
    between = 1.0 - (g @ g.T)[~np.eye(t, dtype=bool)].mean()
    return M.Metric(DIVERSITY, float(within.mean() / between), None,
                    details={"within_trial_distance": float(within.mean()), "between_stimuli_distance": float(between),
                             "per_image": within.tolist(), "distance": "1 - Pearson r of image features"})


def stage_metrics(gt: np.ndarray, gt_features: torch.Tensor, images: np.ndarray, features: torch.Tensor,
                  backend: str, n_way: int | None, scorer: SemanticScorer | None, semantic_reason: str | None
                  ) -> list[M.Metric]:
    """Metrics of one stage: images [T, S, H, W, 3] with features [T, S, D] against the stimuli."""
    out = []
    if scorer is not None:
        out += scorer.score(images)              # attribute accuracy, category n-way, then per attribute
    else:
        out += [M.skipped("sim_attribute_accuracy", semantic_reason)]
    out.append(M.feature_identification(gt_features, features, "pcc", name=f"{backend}_pairwise_pcc"))
    if n_way is not None:
        out.append(M.feature_n_way_top1(gt_features, features, n_way, "pcc", name=f"{backend}_{n_way}way_top1_pcc"))
    out.append(M.pairwise_identification(gt, images, "pcc"))
    if images.shape[1] > 1:  # diversity only where a stage draws several samples per trial
        out.append(sample_diversity(features, gt_features))
    return out


def _features(feature_fn: FeatureFn, images: np.ndarray) -> torch.Tensor:
    """[T, S, H, W, 3] -> [T, S, D]."""
    return feature_fn(images.reshape(-1, *images.shape[2:])).reshape(*images.shape[:2], -1)


def diagnose(*, gt: np.ndarray, decoded: np.ndarray, train_images: np.ndarray, train_features: torch.Tensor,
             predicted_features: torch.Tensor,
             round_trip: np.ndarray, generate: Callable[[torch.Tensor], np.ndarray],
             true_features: torch.Tensor, feature_fn: FeatureFn, backend: str, n_way: int | None,
             scorer: SemanticScorer | None, semantic_reason: str | None) -> Diagnostics:
    """Run every stage and score it.

    Args:
        gt: test stimuli at the decoded resolution, uint8 [T, H, W, 3].
        decoded: LEA's decoded images, uint8 [T, S, H, W, 3].
        train_images: training stimuli uint8 [M, h, w, 3] (retrieval candidates).
        train_features: their image features [M, D].
        predicted_features: features predicted from fMRI [T, D] (the MaskGIT condition).
        round_trip: the tokenizer's reconstruction of the test stimuli, uint8 [T, H, W, 3] like `gt` (made
            from the stimuli as loaded, resized as the tokenizer was trained: LEA.tokenizer_round_trip).
        generate: features [T, D] -> uint8 [T, S, H, W, 3] (MaskGIT + tokenizer, the run's sampling).
        true_features: image features of the test stimuli [T, D], the condition MaskGIT was trained on.
        feature_fn: images uint8 [N, H, W, 3] -> features [N, D] (the run's feature space).
        backend: feature backend name (metric names).
        n_way: n of the feature n-way accuracy (None: too few trials).
        scorer: the simulated-data semantic scorer, or None with `semantic_reason`.
    """
    if round_trip.shape != gt.shape:
        raise DataError(describe("tokenizer round trip of the test stimuli", f"images {list(gt.shape)} like the "
                                 "ground truth at the decoded resolution", list(round_trip.shape)))
    gt_features = feature_fn(gt)  # [T, D]
    _, retrieved = retrieve_images(predicted_features, train_features, train_images)  # [T, 1, h, w, 3]
    retrieved = M.resize_images(retrieved[:, 0], gt.shape[1:3])[:, None]  # [T, 1, H, W, 3]
    stage_images = {"stimuli": gt[:, None], "tokenizer_round_trip": round_trip[:, None],
                    "decoded_from_true_features": generate(true_features), "retrieval_baseline": retrieved,
                    "lea_decoded": decoded}
    readout = {"true_features_readout": true_features, "predicted_features_readout": predicted_features}
    metrics, rows, columns = [], {}, []
    for stage in STAGES:
        if stage in READOUT_STAGES:
            scored = (scorer.score_features(train_features, readout[stage]) if scorer is not None
                      else [M.skipped("sim_attribute_accuracy", semantic_reason)])
        elif stage == "stimuli":  # identification of the stimuli by themselves is 1 by construction
            scored = scorer.score(stage_images[stage]) if scorer is not None else []
        else:
            images = stage_images[stage]
            scored = stage_metrics(gt, gt_features, images, _features(feature_fn, images), backend, n_way,
                                   scorer, semantic_reason)
        in_table = [m for m in scored if not m.name.startswith(PER_ATTRIBUTE)]
        rows[stage] = {m.name: m for m in in_table}
        columns += [m.name for m in in_table if m.name not in columns]
        for m in scored:
            metrics.append(M.Metric(f"{stage}/{m.name}", m.value, m.chance, m.skipped, m.details))
    figure = column_grid([(f"{FIGURE_CAPTIONS[stage]}" + (f" {k + 1}" if images.shape[1] > 1 else ""), images[:, k])
                          for stage, images in stage_images.items()
                          for k in range(min(images.shape[1], FIGURE_SAMPLES))], max_rows=FIGURE_MAX_ROWS)
    return Diagnostics(metrics=metrics, table_columns=columns, table_rows=rows, backend=backend, figure=figure,
                       stage_images=stage_images)
