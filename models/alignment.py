"""Linear alignment between fMRI latents and image features.

LEA aligns the two latent spaces with closed-form ridge regression:

- decoding head `W_d`: fMRI latent `z_f [N, Df]` -> image feature `z_i [N, Di]`
  (alpha 500, no intercept);
- encoding head `W_e`: image feature -> fMRI latent (alpha 500, with intercept).

Ridge minimises `||Y - X W - b||^2 + alpha ||W||^2` (the intercept `b` is not
penalised). With an intercept, X and Y are centred, W is fitted on the centred
data and `b = mean(Y) - mean(X) W`; without one, nothing is centred and b = 0.
This is the same objective and intercept handling as scikit-learn's
`Ridge(alpha, fit_intercept)`.

At test time the release re-standardises predictions: every output dimension is
z-scored over the test set and rescaled with the training targets' per-dimension
mean and standard deviation. That uses test-set statistics, so it is an explicit
option whose setting is stored with the heads and reported by `describe()`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from models.checkpoints import safe_torch_load
from models.hub import CONFIG_NAME, join_tensors, read_pretrained, save_pretrained, split_tensors
from utils.errors import CheckpointError, ConfigError, DataError, describe
from utils.io import atomic_torch_save

SOLVERS = ("auto", "primal", "dual")
RIDGE_FORMAT = "lea.ridge_head"
HEADS_FORMAT = "lea.alignment_heads"
HEADS_KIND = "align"  # kind of the heads' Hub-style folder
FORMAT_VERSION = 1
DEFAULT_ALPHA = 500.0
DEFAULT_CV_FOLDS = 5
CV_SEED = 0
STD_EPS = 1e-8  # floor for a standard deviation before dividing by it


class NotFittedError(ConfigError):
    """An object is used before it was fitted or loaded."""


def _check_matrix(name: str, x: torch.Tensor, n_rows: Optional[int] = None,
                  n_cols: Optional[int] = None) -> None:
    """Raise DataError unless `x` is a finite 2-D floating tensor of the given size."""
    if not isinstance(x, torch.Tensor):
        raise DataError(describe(name, "a torch.Tensor", type(x).__name__))
    if x.ndim != 2:
        raise DataError(describe(name, "a 2-D tensor [N, D]", f"shape {list(x.shape)}"))
    if n_rows is not None and x.shape[0] != n_rows:
        raise DataError(describe(name, f"{n_rows} rows (one per sample)", f"{x.shape[0]} rows"))
    if n_cols is not None and x.shape[1] != n_cols:
        raise DataError(describe(name, f"{n_cols} columns", f"{x.shape[1]} columns"))
    if not torch.is_floating_point(x):
        raise DataError(describe(name, "a floating-point tensor", f"dtype {x.dtype}"))
    if not bool(torch.isfinite(x).all()):
        raise DataError(describe(name, "finite values", "NaN or Inf"))


def _check_alpha(alpha: float, where: str) -> float:
    alpha = float(alpha)
    if not alpha > 0.0:
        raise ConfigError(describe(where, "a ridge alpha > 0", alpha))
    return alpha


def ridge_weights(x: torch.Tensor, y: torch.Tensor, alphas: Sequence[float],
                  solver: str = "auto") -> list[torch.Tensor]:
    """Ridge weights without intercept for several alphas, one Gram matrix.

    Args:
        x: [N, Din] inputs (already centred when an intercept is wanted).
        y: [N, Dout] targets (centred likewise).
        alphas: penalties, each > 0.
        solver: 'primal' solves (XᵀX + αI) W = XᵀY, a Din×Din system;
            'dual' solves (XXᵀ + αI) A = Y and returns W = XᵀA, an N×N system;
            'auto' takes the smaller one.
    Returns:
        one float64 tensor [Din, Dout] per alpha.
    """
    if solver not in SOLVERS:
        raise ConfigError(describe("ridge solver", f"one of {SOLVERS}", repr(solver)))
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    n, d_in = x.shape
    primal = solver == "primal" or (solver == "auto" and d_in <= n)
    if primal:
        gram = x.T @ x                      # [Din, Din]
        rhs = x.T @ y                       # [Din, Dout]
    else:
        gram = x @ x.T                      # [N, N]
        rhs = y                             # [N, Dout]
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    weights = []
    for alpha in alphas:
        sol = torch.linalg.solve(gram + alpha * eye, rhs)
        weights.append(sol if primal else x.T @ sol)   # [Din, Dout]
    return weights


def kfold_indices(n: int, folds: int, seed: Optional[int] = CV_SEED) -> list[torch.Tensor]:
    """Validation indices of `folds` near-equal folds of range(n).

    With a seed the samples are shuffled once by a fixed-seed permutation
    (training sets are often ordered by category); with seed None the folds are
    contiguous blocks.
    """
    if not 2 <= folds <= n:
        raise ConfigError(describe("cv_folds", f"an integer in [2, {n}] (number of samples)", folds))
    if seed is None:
        order = torch.arange(n)
    else:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return list(torch.tensor_split(order, folds))


class RidgeHead:
    """Multi-output ridge regression `Y ≈ X W + b`, fitted in closed form.

    Args:
        alpha: penalty (> 0). Ignored when `alphas` is given.
        fit_intercept: centre X and Y and fit an unpenalised intercept.
        alphas: optional grid; `fit` then picks the alpha with the lowest mean
            validation MSE over `cv` folds and records every score in `cv_scores`.
        cv: number of folds for the alpha search.
        solver: 'auto' | 'primal' | 'dual' (see `ridge_weights`).

    The weights are kept in float64 on the device of the training data;
    `predict` returns the dtype and device of its input.
    """

    def __init__(self, alpha: float = DEFAULT_ALPHA, fit_intercept: bool = True,
                 alphas: Optional[Sequence[float]] = None, cv: int = DEFAULT_CV_FOLDS,
                 solver: str = "auto"):
        self.alpha = _check_alpha(alpha, "alpha")
        self.fit_intercept = bool(fit_intercept)
        self.alphas = None if alphas is None else [_check_alpha(a, "alphas") for a in alphas]
        if self.alphas is not None and len(self.alphas) == 0:
            raise ConfigError(describe("alphas", "a non-empty list of alphas or None", "[]"))
        self.cv = int(cv)
        if solver not in SOLVERS:
            raise ConfigError(describe("solver", f"one of {SOLVERS}", repr(solver)))
        self.solver = solver
        self.weight: Optional[torch.Tensor] = None      # [Din, Dout] float64
        self.intercept: Optional[torch.Tensor] = None   # [Dout] float64
        self.cv_scores: dict[float, float] = {}

    # -- fitting ---------------------------------------------------------------

    @property
    def fitted(self) -> bool:
        return self.weight is not None

    @property
    def in_dim(self) -> int:
        self._require_fitted()
        return int(self.weight.shape[0])

    @property
    def out_dim(self) -> int:
        self._require_fitted()
        return int(self.weight.shape[1])

    def _centre(self, x: torch.Tensor, y: torch.Tensor):
        """Centre both sides when fitting an intercept; returns (xc, yc, x_mean, y_mean)."""
        if self.fit_intercept:
            x_mean, y_mean = x.mean(0), y.mean(0)          # [Din], [Dout]
        else:
            x_mean = x.new_zeros(x.shape[1])
            y_mean = y.new_zeros(y.shape[1])
        return x - x_mean, y - y_mean, x_mean, y_mean

    def _cv_select(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Mean validation MSE for every alpha of the grid; returns the best alpha."""
        totals = torch.zeros(len(self.alphas), dtype=torch.float64)
        for val_idx in kfold_indices(x.shape[0], self.cv):
            val_idx = val_idx.to(x.device)
            train_mask = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            train_mask[val_idx] = False
            xc, yc, x_mean, y_mean = self._centre(x[train_mask], y[train_mask])
            for k, w in enumerate(ridge_weights(xc, yc, self.alphas, self.solver)):
                pred = (x[val_idx] - x_mean) @ w + y_mean           # [Nval, Dout]
                totals[k] += ((pred - y[val_idx]) ** 2).mean().item()
        scores = (totals / self.cv).tolist()
        self.cv_scores = dict(zip(self.alphas, scores))
        return self.alphas[int(torch.tensor(scores).argmin())]

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "RidgeHead":
        """Fit on inputs `x [N, Din]` and targets `y [N, Dout]`."""
        _check_matrix("ridge inputs X", x)
        _check_matrix("ridge targets Y", y, n_rows=x.shape[0])
        x64, y64 = x.to(torch.float64), y.to(torch.float64)
        if self.alphas is not None:
            self.alpha = self._cv_select(x64, y64)
        xc, yc, x_mean, y_mean = self._centre(x64, y64)
        (self.weight,) = ridge_weights(xc, yc, [self.alpha], self.solver)
        self.intercept = y_mean - x_mean @ self.weight            # [Dout]
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """`x [N, Din]` -> `[N, Dout]` in x's dtype and device."""
        self._require_fitted()
        _check_matrix("ridge inputs X", x, n_cols=self.in_dim)
        w = self.weight.to(x.device)
        b = self.intercept.to(x.device)
        return (x.to(torch.float64) @ w + b).to(x.dtype)

    def _require_fitted(self) -> None:
        if self.weight is None:
            raise NotFittedError("ridge head is not fitted: call fit(X, Y) or load a saved head first")

    # -- persistence -----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, so `torch.load(weights_only=True)` reads it."""
        self._require_fitted()
        return {
            "weight": self.weight.detach().cpu(),
            "intercept": self.intercept.detach().cpu(),
            "alpha": self.alpha,
            "fit_intercept": self.fit_intercept,
            "alphas": self.alphas,
            "cv": self.cv,
            "solver": self.solver,
            "cv_alphas": list(self.cv_scores.keys()),
            "cv_scores": list(self.cv_scores.values()),
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "ridge state") -> "RidgeHead":
        required = ("weight", "intercept", "alpha", "fit_intercept")
        missing = [k for k in required if k not in state]
        if missing:
            raise CheckpointError(describe(source, f"keys {list(required)}", f"missing {missing}"))
        weight, intercept = state["weight"], state["intercept"]
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            raise CheckpointError(describe(f"{source} key 'weight'", "a 2-D tensor [Din, Dout]",
                                           getattr(weight, "shape", type(weight).__name__)))
        if not isinstance(intercept, torch.Tensor) or list(intercept.shape) != [weight.shape[1]]:
            raise CheckpointError(describe(f"{source} key 'intercept'", f"shape [{weight.shape[1]}]",
                                           list(getattr(intercept, "shape", []))))
        self.alpha = _check_alpha(state["alpha"], f"{source} key 'alpha'")
        self.fit_intercept = bool(state["fit_intercept"])
        self.alphas = state.get("alphas")
        self.cv = int(state.get("cv", DEFAULT_CV_FOLDS))
        self.solver = state.get("solver", "auto")
        self.cv_scores = dict(zip(state.get("cv_alphas", []), state.get("cv_scores", [])))
        self.weight = weight.to(torch.float64)
        self.intercept = intercept.to(torch.float64)
        return self

    def save(self, path: str | Path) -> Path:
        return atomic_torch_save(path, {"format": RIDGE_FORMAT, "version": FORMAT_VERSION,
                                        "state": self.state_dict()})

    @classmethod
    def load(cls, path: str | Path) -> "RidgeHead":
        payload = _load_payload(path, RIDGE_FORMAT)
        return cls().load_state_dict(payload["state"], source=f"{path} key 'state'")


def _load_payload(path: str | Path, expected_format: str) -> dict[str, Any]:
    payload = safe_torch_load(path)
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(describe(path, f"a saved '{expected_format}' file", repr(found)))
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(describe(f"{path} key 'version'", FORMAT_VERSION, payload.get("version")))
    return payload


def restandardize(pred: torch.Tensor, target_mean: torch.Tensor,
                  target_std: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Z-score `pred [N, D]` per dimension over its N rows, rescale to the target statistics.

    `target_mean`, `target_std` [D] are the per-dimension statistics of the
    training targets. The standard deviation over the N predictions is the
    population one (ddof 0), or with `unbiased` the sample one (ddof 1, the
    release's `torch.std`); a constant prediction dimension maps to the target mean.
    """
    _check_matrix("predictions to re-standardise", pred)
    if pred.shape[0] < 2:
        raise DataError(describe("predictions to re-standardise",
                                 "at least 2 rows (statistics are taken over the test set)",
                                 f"{pred.shape[0]} row"))
    for name, stat in (("target_mean", target_mean), ("target_std", target_std)):
        if stat.shape != pred.shape[1:]:
            raise DataError(describe(name, f"shape [{pred.shape[1]}]", list(stat.shape)))
    mean = pred.mean(0, keepdim=True)                                   # [1, D]
    std = pred.std(0, unbiased=unbiased, keepdim=True).clamp_min(STD_EPS)  # [1, D]
    z = (pred - mean) / std                                             # [N, D]
    return z * target_std.to(pred) + target_mean.to(pred)


def _column_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and population std of `x [N, D]`, float64 on CPU."""
    x64 = x.detach().to(torch.float64).cpu()
    return x64.mean(0), x64.std(0, unbiased=False)


STD_MODES = ("population", "unbiased")


def check_std_mode(mode: str) -> str:
    if mode not in STD_MODES:
        raise ConfigError(describe("restandardize_std", f"one of {STD_MODES}", repr(mode)))
    return mode


class AlignmentHeads:
    """The decoding and encoding ridge heads of LEA, fitted and saved together.

    `decode(z_f)` maps fMRI latents `[N, Df]` to image features `[N, Di]`;
    `encode(z_i)` maps image features to fMRI latents. With `restandardize` on
    (the release default), each call re-standardises its whole batch of
    predictions, so call them once on the full test set.
    """

    def __init__(self, decode_alpha: float = DEFAULT_ALPHA, encode_alpha: float = DEFAULT_ALPHA,
                 decode_intercept: bool = False, encode_intercept: bool = True,
                 restandardize: bool = True, alphas: Optional[Sequence[float]] = None,
                 cv_folds: int = DEFAULT_CV_FOLDS, restandardize_std: str = "population"):
        self.decoder = RidgeHead(decode_alpha, decode_intercept, alphas, cv_folds)
        self.encoder = RidgeHead(encode_alpha, encode_intercept, alphas, cv_folds)
        self.restandardize = bool(restandardize)
        self.restandardize_std = check_std_mode(restandardize_std)
        self.stats: dict[str, torch.Tensor] = {}
        self.n_train = 0
        # what the heads were fitted on: {'fmri_checkpoint': {'path', 'sha256'}, 'features': {...}}
        # (models/provenance.py compares it with what LEA is given)
        self.provenance: dict[str, Any] = {}

    @classmethod
    def from_config(cls, cfg: Any) -> "AlignmentHeads":
        """Build from a config object with this constructor's field names (e.g. AlignConfig)."""
        fields = asdict(cfg) if is_dataclass(cfg) else dict(vars(cfg))
        return cls(**fields)

    def fit(self, fmri_latents: torch.Tensor, image_features: torch.Tensor) -> "AlignmentHeads":
        """Fit both heads on paired training rows `[N, Df]` and `[N, Di]`."""
        _check_matrix("fMRI latents", fmri_latents)
        _check_matrix("image features", image_features, n_rows=fmri_latents.shape[0])
        self.decoder.fit(fmri_latents, image_features)
        self.encoder.fit(image_features, fmri_latents)
        self.stats = {}
        self.stats["image_mean"], self.stats["image_std"] = _column_stats(image_features)
        self.stats["fmri_mean"], self.stats["fmri_std"] = _column_stats(fmri_latents)
        self.n_train = int(fmri_latents.shape[0])
        return self

    def _restandardize(self, pred: torch.Tensor, side: str) -> torch.Tensor:
        """Re-standardise to the training statistics of `side` ('image' or 'fmri') when switched on.

        With `restandardize_std='unbiased'` (the release) both the test and the training
        standard deviations are sample ones (ddof 1); the stored population std of the
        N training rows is rescaled by sqrt(N / (N - 1)).
        """
        if not self.restandardize:
            return pred
        unbiased = self.restandardize_std == "unbiased"
        std = self.stats[f"{side}_std"]
        if unbiased and self.n_train > 1:
            std = std * math.sqrt(self.n_train / (self.n_train - 1))
        return restandardize(pred, self.stats[f"{side}_mean"], std, unbiased=unbiased)

    def decode(self, fmri_latents: torch.Tensor) -> torch.Tensor:
        """fMRI latents `[N, Df]` -> image features `[N, Di]`."""
        return self._restandardize(self.decoder.predict(fmri_latents), "image")

    def encode(self, image_features: torch.Tensor) -> torch.Tensor:
        """Image features `[N, Di]` -> fMRI latents `[N, Df]`."""
        return self._restandardize(self.encoder.predict(image_features), "fmri")

    def describe(self) -> dict[str, Any]:
        """Settings to report next to results (plain JSON-able values)."""
        return {
            "fmri_dim": self.decoder.in_dim,
            "image_dim": self.decoder.out_dim,
            "n_train": self.n_train,
            "decode_alpha": self.decoder.alpha,
            "decode_intercept": self.decoder.fit_intercept,
            "encode_alpha": self.encoder.alpha,
            "encode_intercept": self.encoder.fit_intercept,
            "restandardize": self.restandardize,
            "restandardize_uses_test_statistics": self.restandardize,
            "restandardize_std": self.restandardize_std,
            "cv_alphas": self.decoder.alphas,
            "decode_cv_scores": {str(a): s for a, s in self.decoder.cv_scores.items()},
            "encode_cv_scores": {str(a): s for a, s in self.encoder.cv_scores.items()},
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "decoder": self.decoder.state_dict(),
            "encoder": self.encoder.state_dict(),
            "restandardize": self.restandardize,
            "stats": {k: v.clone() for k, v in self.stats.items()},
            "n_train": self.n_train,
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "alignment state") -> "AlignmentHeads":
        for key in ("decoder", "encoder", "restandardize", "stats"):
            if key not in state:
                raise CheckpointError(describe(source, f"key '{key}'", f"keys {sorted(state)}"))
        self.decoder.load_state_dict(state["decoder"], f"{source} key 'decoder'")
        self.encoder.load_state_dict(state["encoder"], f"{source} key 'encoder'")
        d_f, d_i = self.decoder.in_dim, self.decoder.out_dim
        if (self.encoder.in_dim, self.encoder.out_dim) != (d_i, d_f):
            raise CheckpointError(describe(f"{source} key 'encoder'",
                                           f"weight [{d_i}, {d_f}] (the decoder's transposed)",
                                           list(self.encoder.weight.shape)))
        expected = {"image_mean": d_i, "image_std": d_i, "fmri_mean": d_f, "fmri_std": d_f}
        stats = state["stats"]
        for key, dim in expected.items():
            value = stats.get(key)
            if not isinstance(value, torch.Tensor) or list(value.shape) != [dim]:
                raise CheckpointError(describe(f"{source} key 'stats.{key}'", f"a tensor of shape [{dim}]",
                                               list(getattr(value, "shape", [])) or value))
        self.stats = {k: stats[k].to(torch.float64) for k in expected}
        self.restandardize = bool(state["restandardize"])
        self.n_train = int(state.get("n_train", 0))
        return self

    def save(self, path: str | Path) -> Path:
        return atomic_torch_save(path, {"format": HEADS_FORMAT, "version": FORMAT_VERSION,
                                        "state": self.state_dict(), "describe": self.describe(),
                                        "provenance": self.provenance})

    def save_pretrained(self, folder: str | Path) -> Path:
        """A new Hub-style folder: the tensors in model.safetensors, the rest of the state in config.json."""
        tensors, plain = split_tensors(self.state_dict())
        return save_pretrained(folder, HEADS_KIND, tensors, state=plain, describe=self.describe())

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "AlignmentHeads":
        config, tensors = read_pretrained(folder, HEADS_KIND)
        if not isinstance(config.get("state"), dict):
            raise CheckpointError(describe(Path(folder) / CONFIG_NAME, "key 'state' (a mapping)",
                                           repr(config.get("state"))))
        return cls().load_state_dict(join_tensors(tensors, config["state"]), source=str(folder))

    @classmethod
    def load(cls, path: str | Path) -> "AlignmentHeads":
        payload = _load_payload(path, HEADS_FORMAT)
        heads = cls().load_state_dict(payload["state"], source=f"{path} key 'state'")
        heads.provenance = dict(payload.get("provenance") or {})
        return heads


def out_of_fold_decode(align: Any, fmri_latents: torch.Tensor, image_features: torch.Tensor,
                       folds: int = DEFAULT_CV_FOLDS, seed: Optional[int] = CV_SEED,
                       groups: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Features predicted for every training row by heads fitted on the other folds.

    fmri_latents [N, Df], image_features [N, Di] (paired rows) -> [N, Di]. Each fold is decoded by
    heads built from `align` (an AlignConfig, as `AlignmentHeads.from_config`) and fitted on the
    other folds, and re-standardised over that fold as a test set is, so the rows resemble what
    heads fitted on all rows predict for unseen trials. With `groups` (long [N], e.g. each trial's
    image category) the folds are made of whole groups, so no row is predicted by heads that saw
    its group, as a test set of categories absent from training is. For choosing decoding
    settings without the test set.
    """
    _check_matrix("fMRI latents", fmri_latents)
    _check_matrix("image features", image_features, n_rows=fmri_latents.shape[0])
    n = fmri_latents.shape[0]
    if groups is None:
        splits = kfold_indices(n, folds, seed)
    else:
        if groups.shape != (n,):
            raise DataError(describe("groups", f"one group per row, shape ({n},)", tuple(groups.shape)))
        names, member = torch.unique(groups, return_inverse=True)  # member [N] in [0, G)
        splits = [torch.nonzero(torch.isin(member, held)).flatten() for held in kfold_indices(len(names), folds, seed)]
    out = torch.empty_like(image_features)  # [N, Di]
    for val in splits:
        train = torch.ones(n, dtype=torch.bool)
        train[val] = False
        fold = AlignmentHeads.from_config(align).fit(fmri_latents[train], image_features[train])
        out[val] = fold.decode(fmri_latents[val]).to(out)
    return out
