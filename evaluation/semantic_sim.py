"""Semantic accuracy on simulated data: the simulator's analogue of the paper's ImageNet classifier.

The paper scores a decoded image by whether an ImageNet classifier puts it in
the stimulus's class (n-way top-1). On simulated data the classes are the
simulator's categories, and each category is a combination of attributes
(shape, palette, stripe orientation, stripe frequency, layout; written to
`ground_truth/categories.json`). Here a classifier learns those attributes from
the simulated *training* stimuli only, and labels every decoded image:

- `sim_attribute_accuracy_<attribute>`: fraction of decoded images (over trials
  and samples) whose predicted attribute is the stimulus's; chance 1/(number of
  values of that attribute);
- `sim_attribute_accuracy`: the mean over the attributes; chance the mean of theirs;
- `sim_category_<n>way_top1`: the n-way top-1 accuracy among the test categories,
  a category scored by the sum of the log-probabilities of its attribute values
  (the paper's n-way protocol, n = min(50, test categories)); chance 1/n.

Each metric carries in `details['stimuli_ceiling']` the same number computed on the true
test stimuli: what a perfect decoder could reach with this classifier.

The classifier: per attribute a multinomial logistic regression (L2, L-BFGS from
zeros, deterministic) on weight-free image features: the raw (unprojected)
handcrafted features of models/image_features.py plus their Gabor energies summed
over space (position-free orientation and scale energy), standardised with the
training statistics. On recorded data every metric is skipped with the reason.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp

from datasets.common import SubjectData
from datasets.simulate import ATTRIBUTE_SIZES, CATEGORY_ATTRIBUTES, GROUND_TRUTH_DIR
from evaluation.metrics import STIMULI_CEILING, Metric, n_way_top1, skipped
from models.image_features import GABOR_GRID, HandcraftedFeatures, features_of
from utils.errors import DataError, describe

ATTRIBUTES = CATEGORY_ATTRIBUTES   # shape, palette, orientation, frequency, layout
CATEGORIES_FILE = "categories.json"
L2_PENALTY = 1e-3            # on the weights of standardised features, per attribute
LBFGS_ITERATIONS = 500
STD_FLOOR = 1e-6             # features constant over the training stimuli are not scaled up
DEFAULT_N_WAY = 50
SEARCH_DEPTH = 4             # folders above the data folder searched for ground_truth/
CLASSIFIER_NOTE = "logistic regression per attribute on weight-free features, fitted on the training stimuli"
READOUT_NOTE = ("logistic regression per attribute on the given features, fitted on the training stimuli's "
                "features (a read-out of the features, no image drawn)")
RECORDED_REASON = ("needs the simulator's stimulus attributes (ground_truth/categories.json); "
                   "on recorded data the ImageNet-classifier n-way accuracy is the semantic metric")


def find_categories_file(data_path: str | Path) -> Path | None:
    """`ground_truth/categories.json` in the data folder or one of the folders above it; None if absent."""
    for parent in [Path(data_path), *Path(data_path).parents][:SEARCH_DEPTH]:
        candidate = parent / GROUND_TRUTH_DIR / CATEGORIES_FILE
        if candidate.is_file():
            return candidate
    return None


def read_categories(path: Path) -> dict[int, dict]:
    """categories.json -> {category id: entry}; each entry has every attribute as an int."""
    try:
        table = json.loads(path.read_text())
        entries = {int(c["id"]): c for c in table}
        for c in entries.values():
            for a in ATTRIBUTES:
                c[a] = int(c[a])
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(describe(path, f"a list of categories with 'id', 'class_id' and {list(ATTRIBUTES)}",
                                 f"unreadable content ({err!r})")) from None
    return entries


def stimulus_categories(data: SubjectData, categories: dict[int, dict],
                        ground_truth: Path) -> tuple[np.ndarray, np.ndarray]:
    """Category id of every training image [M] and test image [T] of a simulated subject.

    GOD: from the loader's class labels (categories.json `class_id`); BOLD5000: from the
    image names in the subject's ground-truth file (`image_names`, `image_category`).
    """
    if data.dataset == "GOD":
        of_class = {c["class_id"]: k for k, c in categories.items()}
        out = []
        for split, labels in (("train", data.train_labels), ("test", data.test_labels)):
            if labels is None or any(int(l) not in of_class for l in labels):
                raise DataError(describe(f"{data.subject} {split} labels", f"class ids listed in {ground_truth}",
                                         "labels missing or unknown"))
            out.append(np.array([of_class[int(l)] for l in labels], dtype=np.int64))
        return out[0], out[1]
    path = ground_truth / data.dataset / f"{data.subject}.npz"
    if not path.is_file():
        raise DataError(describe(path, "the simulator's ground truth of this subject", "no such file"))
    with np.load(path, allow_pickle=False) as truth:
        if "image_names" not in truth.files or "image_category" not in truth.files:
            raise DataError(describe(path, "keys 'image_names' and 'image_category'", f"keys {truth.files}"))
        of_name = dict(zip((str(n) for n in truth["image_names"]), truth["image_category"].tolist()))
    out = []
    for split in ("train", "test"):
        names = data.source.get(f"{split}_image_names", [])
        missing = [n for n in names if n not in of_name]
        if missing or not names:
            raise DataError(describe(path, f"a category for every {split} image name",
                                     f"{len(missing)} missing (e.g. {missing[:2]})" if missing else "no names"))
        out.append(np.array([of_name[n] for n in names], dtype=np.int64))
    return out[0], out[1]


def classifier_features(images: np.ndarray) -> torch.Tensor:
    """uint8 images [N, H, W, 3] -> float64 [N, F]: raw handcrafted features + spatially summed Gabor energy."""
    raw = features_of(HandcraftedFeatures(dim=None), images).double()  # [N, raw_dim]
    gabor = raw[:, HandcraftedFeatures.block("gabor")].reshape(len(raw), -1, GABOR_GRID ** 2)  # [N, scales*planes*orientations, cells]
    return torch.cat([raw, gabor.sum(-1)], 1)  # [N, F]


def fit_softmax_regression(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression with an L2 penalty on the weights, L-BFGS from zeros.

    x float64 [M, F], y int [M] in [0, k) -> weights [F, k], bias [k].
    """
    m, f = x.shape
    onehot = np.eye(k)[y]  # [M, k]

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:f * k].reshape(f, k), theta[f * k:]
        logits = x @ w + b  # [M, k]
        log_p = logits - logsumexp(logits, axis=1, keepdims=True)
        err = (np.exp(log_p) - onehot) / m  # d(mean cross-entropy)/d logits
        loss = -(onehot * log_p).sum() / m + L2_PENALTY * (w * w).sum()
        grad = np.concatenate([(x.T @ err + 2 * L2_PENALTY * w).ravel(), err.sum(0)])
        return float(loss), grad

    result = minimize(loss_and_grad, np.zeros(f * k + k), jac=True, method="L-BFGS-B",
                      options={"maxiter": LBFGS_ITERATIONS})
    return result.x[:f * k].reshape(f, k), result.x[f * k:]


@dataclass
class AttributeClassifier:
    """Standardisation and one linear softmax head per attribute."""

    mean: torch.Tensor               # [F]
    std: torch.Tensor                # [F]
    weights: list[torch.Tensor]      # per attribute [F, k]
    biases: list[torch.Tensor]       # per attribute [k]

    @classmethod
    def fit(cls, images: np.ndarray, attributes: np.ndarray) -> "AttributeClassifier":
        """images uint8 [M, H, W, 3]; attributes int [M, A] (ATTRIBUTES order)."""
        return cls.fit_features(classifier_features(images), attributes)

    @classmethod
    def fit_features(cls, feats: torch.Tensor, attributes: np.ndarray) -> "AttributeClassifier":
        """The same read-out on any features float64 [M, F] (e.g. a MaskGIT condition)."""
        mean, std = feats.mean(0), feats.std(0).clamp_min(STD_FLOOR)
        x = ((feats - mean) / std).numpy()  # [M, F]
        weights, biases = [], []
        for a, k in enumerate(ATTRIBUTE_SIZES):
            w, b = fit_softmax_regression(x, attributes[:, a], k)
            weights.append(torch.from_numpy(w))
            biases.append(torch.from_numpy(b))
        return cls(mean, std, weights, biases)

    def log_probs(self, images: np.ndarray) -> list[torch.Tensor]:
        """uint8 [N, H, W, 3] -> per attribute log-probabilities [N, k]."""
        return self.log_probs_of_features(classifier_features(images))

    def log_probs_of_features(self, feats: torch.Tensor) -> list[torch.Tensor]:
        """features float64 [N, F] -> per attribute log-probabilities [N, k]."""
        x = (feats - self.mean) / self.std
        return [torch.log_softmax(x @ w + b, -1) for w, b in zip(self.weights, self.biases)]


def attributes_of(categories: dict[int, dict], cats: np.ndarray) -> np.ndarray:
    """Category ids [N] -> their attributes int [N, A] (ATTRIBUTES order)."""
    return np.array([[categories[int(c)][a] for a in ATTRIBUTES] for c in cats], dtype=np.int64)


class SemanticScorer:
    """Scores decoded images of one simulated subject against its test stimuli's attributes."""

    def __init__(self, data: SubjectData, categories_path: Path, stimuli: np.ndarray | None = None):
        """`stimuli`: the test stimuli as decoded images are compared with them (e.g. resized to the
        decoded resolution), uint8 [T, H, W, 3]; default the subject's test images. They give the ceiling."""
        categories = read_categories(categories_path)
        train_cat, test_cat = stimulus_categories(data, categories, categories_path.parent)
        self.train_attributes = attributes_of(categories, train_cat)           # [M, A] of the training stimuli
        self.classifier = AttributeClassifier.fit(data.train_images, self.train_attributes)
        self.test_attributes = attributes_of(categories, test_cat)            # [T, A]
        self.candidates = np.unique(test_cat)                                 # [C] test categories
        self.candidate_attributes = attributes_of(categories, self.candidates)  # [C, A]
        self.test_class = np.searchsorted(self.candidates, test_cat)          # [T] index into candidates
        self.source = str(categories_path)
        self.n_way = min(DEFAULT_N_WAY, len(self.candidates)) if len(self.candidates) >= 2 else None
        stimuli = data.test_images if stimuli is None else stimuli
        self.ceiling = {m.name: m.value for m in self.score(stimuli[:, None], with_ceiling=False)
                        if m.value is not None}

    def score(self, images: np.ndarray, with_ceiling: bool = True) -> list[Metric]:
        """uint8 images [T, S, H, W, 3] (sample s of test trial t) -> the semantic metrics."""
        t, s = images.shape[:2]
        self._check_trials(t, "images to classify")
        flat = images.reshape(t * s, *images.shape[2:])  # [T*S, H, W, 3]
        log_probs = [lp.reshape(t, s, -1) for lp in self.classifier.log_probs(flat)]  # per attribute [T, S, k]
        return self._metrics(log_probs, CLASSIFIER_NOTE, self.ceiling if with_ceiling else {})

    def score_features(self, train_features: torch.Tensor, features: torch.Tensor) -> list[Metric]:
        """The same metrics for a linear read-out of features instead of images: what the features
        themselves carry about each attribute, whatever is drawn from them.

        train_features [M, D] of the training stimuli (the subject's training images, in order) fit
        one softmax regression per attribute (as the image classifier, on these features); it reads
        features [T, D] of the test trials (e.g. the true or the predicted image features).
        """
        self._check_trials(features.shape[0], "features to read out")
        if train_features.shape[0] != len(self.train_attributes):
            raise DataError(describe("training features to fit the read-out",
                                     f"{len(self.train_attributes)} rows (training stimuli)", train_features.shape[0]))
        probe = AttributeClassifier.fit_features(train_features.double(), self.train_attributes)
        log_probs = [lp[:, None] for lp in probe.log_probs_of_features(features.double())]  # per attribute [T, 1, k]
        return self._metrics(log_probs, READOUT_NOTE, {})

    def _check_trials(self, t: int, what: str) -> None:
        if t != len(self.test_attributes):
            raise DataError(describe(what, f"{len(self.test_attributes)} test trials", t))

    def _metrics(self, log_probs: list[torch.Tensor], method: str, ceiling: dict[str, float]) -> list[Metric]:
        """Per attribute log-probabilities [T, S, k] of S samples per test trial -> the semantic metrics."""
        s = log_probs[0].shape[1]
        out, rates, chances = [], [], []
        for a, (name, lp) in enumerate(zip(ATTRIBUTES, log_probs)):
            correct = (lp.argmax(-1).numpy() == self.test_attributes[:, a, None])  # [T, S]
            rates.append(correct.mean())
            chances.append(1.0 / ATTRIBUTE_SIZES[a])
            out.append(Metric(f"sim_attribute_accuracy_{name}", correct.mean(), chances[-1],
                              details={"per_image": correct.mean(1).tolist()}))
        out.insert(0, Metric("sim_attribute_accuracy", float(np.mean(rates)), float(np.mean(chances)),
                             details={"attributes": list(ATTRIBUTES)}))
        if self.n_way is None:
            out.insert(1, skipped("sim_category_top1", "fewer than 2 test categories"))
        else:
            # category score = sum over attributes of log p(attribute value of that category)  [T, S, C]
            scores = sum(lp[..., torch.as_tensor(self.candidate_attributes[:, a])]
                         for a, lp in enumerate(log_probs))
            # n_way_top1 only compares scores, so log-scores serve as probabilities (no underflow)
            out.insert(1, n_way_top1(self.test_class, scores.numpy(), n=self.n_way,
                                     name=f"sim_category_{self.n_way}way_top1"))
        for m in out:
            m.details.update({"classifier": method, "categories": self.source, "n_samples": int(s)})
            if m.name in ceiling:
                m.details[STIMULI_CEILING] = ceiling[m.name]
        return out


def semantic_scorer_or_reason(data: SubjectData, data_path: str | Path, stimuli: np.ndarray | None = None
                              ) -> tuple[SemanticScorer | None, str | None]:
    """A scorer for simulated data, or None and the reason it is skipped (recorded data)."""
    path = find_categories_file(data_path)
    if path is None:
        return None, RECORDED_REASON
    return SemanticScorer(data, path, stimuli), None


def skipped_semantic(reason: str) -> list[Metric]:
    """The semantic metrics, skipped with `reason`."""
    return [skipped("sim_attribute_accuracy", reason), skipped("sim_category_top1", reason)]


def semantic_metrics_fn(scorer: SemanticScorer | None, reason: str | None) -> Callable[[np.ndarray], list[Metric]]:
    """decoded images [T, S, H, W, 3] -> the semantic metrics: the scorer's, or skipped with `reason`."""
    if scorer is not None:
        return scorer.score
    return lambda images: skipped_semantic(reason)
