"""Safe loading of published and released checkpoints.

Every file is read with `torch.load(map_location='cpu', weights_only=True)` or
safetensors; a pickled Python object that is not on the allow-list is refused
(never executed). Every load is strict: a missing key, an unexpected key or a
shape mismatch raises CheckpointError listing each offending key with both
shapes.

- `load_release_checkpoint`: the LEA release's `{'model': state_dict}` files.
- `load_mindvis_fmri_encoder`: MinD-Vis `fmri_encoder.pth` into the fMRI
  autoencoder (shared transformer weights carry over, the rest stays new).
- `load_maskgit_vqgan`: MaskGIT's ImageNet-256 tokenizer, either as a PyTorch
  state dict in release names or as the flattened Flax tree saved to `.npz`.

Converting Google's Flax tokenizer checkpoint to `.npz` (where flax is installed)::

    python -c "import numpy as np, flax.serialization as s, flax.traverse_util as t; \
d = s.msgpack_restore(open('tokenizer_imagenet256_checkpoint', 'rb').read()); \
np.savez('maskgit_tokenizer.npz', **{k: np.asarray(v) for k, v in t.flatten_dict(d, sep='/').items()})"
"""
from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import CheckpointError, DataError, describe
from utils.io import open_npz

MAX_LISTED_KEYS = 40          # offending keys listed in one error message
DATA_PARALLEL_PREFIX = "module."
SAFETENSORS_SUFFIX = ".safetensors"
NPZ_SUFFIX = ".npz"

MINDVIS_HINT = ("MinD-Vis publishes pretrains/GOD/fmri_encoder.pth and pretrains/BOLD5000/fmri_encoder.pth "
                "with its pretrained models; download the file and pass its path")
MASKGIT_HINT = ("download MaskGIT's tokenizer_imagenet256_checkpoint and convert it to .npz "
                "(see models/checkpoints.py), or pass a PyTorch state dict in release names")
RELEASE_HINT = "pass the path of a checkpoint saved by this project or by the LEA release"


# ---------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------

def _require_file(path: str | Path, hint: Optional[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        how = f"; {hint}" if hint else ""
        raise CheckpointError(f"{path}: checkpoint file not found{how}")
    return path


def safe_torch_load(path: str | Path, extra_safe_globals: Sequence[Any] = (),
                    hint: Optional[str] = None) -> Any:
    """Load a checkpoint without executing pickled code.

    Args:
        path: a `torch.save` file or a `.safetensors` file.
        extra_safe_globals: classes (or `(class, "module.Name")` pairs) admitted
            for this load in addition to torch's weights-only allow-list.
        hint: how to obtain the file, added to the not-found error.
    Returns:
        the loaded object, tensors on the CPU.
    """
    path = _require_file(path, hint)
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        with torch.serialization.safe_globals(list(extra_safe_globals)), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # torch's note on unusual pickle protocols
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.findall(r"GLOBAL ([\w.]+)", str(err))
        if not refused:
            raise CheckpointError(describe(path, "a torch checkpoint (torch.save of tensors and plain containers)",
                                           "a file that is not one (unreadable pickle stream)")) from None
        raise CheckpointError(
            f"{path}: refused to load: the file holds the Python object {refused[0]}, which is not on the "
            "allow-list for safe (weights-only) loading; only tensors and plain containers are accepted. "
            "This project never loads such files: re-save the weights as a plain state dict") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(describe(path, "a complete torch checkpoint",
                                       f"an unreadable file: truncated or corrupted ({first_sentence(err)})")) from None


def first_sentence(err: BaseException) -> str:
    """The first sentence of an error message (torch appends advice this project does not give)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0].rstrip(".")


# ---------------------------------------------------------------------------
# Strict state-dict loading
# ---------------------------------------------------------------------------

def _shape(x: Any) -> list[int] | str:
    return list(x.shape) if isinstance(x, (torch.Tensor, np.ndarray)) else type(x).__name__


def _listing(lines: list[str]) -> str:
    shown = lines[:MAX_LISTED_KEYS]
    more = len(lines) - len(shown)
    return "\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more else "")


def state_dict_problems(expected: Mapping[str, torch.Tensor],
                        given: Mapping[str, Any]) -> list[str]:
    """One line per missing key, unexpected key, non-tensor value or shape mismatch."""
    lines = []
    for key, ref in expected.items():
        if key not in given:
            lines.append(f"missing     {key}  model {list(ref.shape)}")
        elif not isinstance(given[key], torch.Tensor):
            lines.append(f"not tensor  {key}  checkpoint {type(given[key]).__name__}")
        elif given[key].shape != ref.shape:
            lines.append(f"shape       {key}  checkpoint {list(given[key].shape)} vs model {list(ref.shape)}")
    lines += [f"unexpected  {key}  checkpoint {_shape(value)}"
              for key, value in given.items() if key not in expected]
    return lines


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Any], source: str | Path) -> None:
    """Load every parameter and buffer of `model` from `state_dict`, or raise listing the problems."""
    problems = state_dict_problems(model.state_dict(), state_dict)
    if problems:
        raise CheckpointError(f"{source}: checkpoint does not fit {type(model).__name__} "
                              f"({len(problems)} problems):{_listing(problems)}")
    model.load_state_dict(dict(state_dict), strict=True)


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = DATA_PARALLEL_PREFIX) -> dict[str, Any]:
    """Drop `prefix` when every key carries it (DataParallel / DDP checkpoints)."""
    keys = list(state_dict)
    if keys and all(k.startswith(prefix) for k in keys):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(obj: Any, source: str | Path, wrappers: Sequence[str] = ("model", "state_dict")) -> dict:
    """The state dict inside a loaded checkpoint: a bare one, or under one of `wrappers`."""
    if _is_state_dict(obj):
        return strip_prefix(obj)
    if isinstance(obj, Mapping):
        for key in wrappers:
            if key in obj and _is_state_dict(obj[key]):
                return strip_prefix(obj[key])
    found = sorted(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(describe(source, f"a state dict (name -> tensor), bare or under one of {list(wrappers)}",
                                   f"keys {found}" if isinstance(obj, Mapping) else found))


@dataclass
class LoadReport:
    """What a conversion load did with every key.

    taken:   (model key, shape) copied from the checkpoint;
    new:     (model key, shape, reason) left as the model initialised it;
    ignored: (checkpoint key, shape, reason) not used.
    """

    source: str
    taken: list[tuple[str, list[int]]] = field(default_factory=list)
    new: list[tuple[str, list[int], str]] = field(default_factory=list)
    ignored: list[tuple[str, list[int], str]] = field(default_factory=list)
    source_config: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """A readable table: one row per key with its shape and fate."""
        rows = [("taken", k, s, "") for k, s in self.taken]
        rows += [("new", k, s, r) for k, s, r in self.new]
        rows += [("ignored", k, s, r) for k, s, r in self.ignored]
        width = max([len(r[1]) for r in rows] + [len("key")])
        lines = [f"{self.source}: {len(self.taken)} taken, {len(self.new)} new, {len(self.ignored)} ignored",
                 f"{'status':8s} {'key':{width}s} {'shape':18s} reason"]
        lines += [f"{st:8s} {k:{width}s} {str(s):18s} {r}" for st, k, s, r in rows]
        return "\n".join(lines)


def load_release_checkpoint(path: str | Path, model: nn.Module) -> LoadReport:
    """Load a release-style file (`{'model': state_dict}` or a bare state dict) strictly."""
    state = extract_state_dict(safe_torch_load(path, hint=RELEASE_HINT), path)
    load_state_dict_strict(model, state, path)
    return LoadReport(str(path), taken=[(k, list(v.shape)) for k, v in state.items()])


# ---------------------------------------------------------------------------
# MinD-Vis fmri_encoder.pth
# ---------------------------------------------------------------------------

class MindVisConfig:
    """Stand-in for MinD-Vis's pickled `config.Config_MBM_fMRI`: only its attributes, as data."""

    PICKLED_NAME = "config.Config_MBM_fMRI"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise CheckpointError(describe(self.PICKLED_NAME, "an attribute dict", type(state).__name__))
        self.__dict__.update(state)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


# Fate of MinD-Vis keys by prefix (first match wins).
MINDVIS_CARRY = ("cls_token", "mask_token", "blocks.", "norm.", "decoder_embed.",
                 "decoder_blocks.", "decoder_norm.")
MINDVIS_POSITIONS = ("pos_embed", "decoder_pos_embed")
MINDVIS_DROPPED = {
    "patch_embed.": "MinD-Vis patchifies voxels with one Conv1d; LEA embeds each ROI group",
    "decoder_pred.": "MinD-Vis predicts voxel patches; LEA maps tokens back per ROI group",
}
LEA_NEW = {
    "patch_embed.layers.": "LEA ROI embedding (not in MinD-Vis)",
    "pred.": "LEA latent projection (not in MinD-Vis)",
    "channel_mapper.": "LEA per-ROI output mapping (not in MinD-Vis)",
    "decoder_pred.": "LEA output convolution (not in MinD-Vis)",
}
POSITIONS_MODES = ("recompute", "interpolate")


def _matches(key: str, prefixes: Iterable[str]) -> bool:
    """Prefixes ending in '.' match a submodule's keys; others match one key exactly."""
    return any(key.startswith(p) if p.endswith(".") else key == p for p in prefixes)


def interpolate_pos_embed(pos: torch.Tensor, new_len: int) -> torch.Tensor:
    """Resample 1-D position embeddings `[1, 1 + L, C]` (CLS row first) to `[1, 1 + new_len, C]`.

    The CLS row is kept; the L token rows are linearly interpolated with the end
    points aligned, so position j of the result reads old position j·(L-1)/(new_len-1).
    """
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[1] < 2:
        raise CheckpointError(describe("position embedding", "shape [1, 1 + L, C] with L >= 1", list(pos.shape)))
    cls_row, tokens = pos[:, :1], pos[:, 1:]                      # [1, 1, C], [1, L, C]
    if tokens.shape[1] == new_len:
        return pos.clone()
    grid = tokens.transpose(1, 2)                                 # [1, C, L]
    if tokens.shape[1] == 1:
        resized = grid.expand(-1, -1, new_len)
    else:
        resized = F.interpolate(grid, size=new_len, mode="linear", align_corners=True)  # [1, C, new_len]
    return torch.cat([cls_row, resized.transpose(1, 2)], dim=1)   # [1, 1 + new_len, C]


def load_mindvis_fmri_encoder(path: str | Path, model: nn.Module, positions: str = "recompute") -> LoadReport:
    """Initialise an fMRI autoencoder from MinD-Vis `fmri_encoder.pth`.

    Transformer blocks, norms, `cls_token`, `mask_token` and `decoder_embed`
    carry over by name and must match in shape; MinD-Vis's patch embedding and
    patch predictor are ignored; LEA's ROI embedding, projection and output
    layers stay as the model initialised them. Nothing is loaded unless every
    carried key fits.

    Args:
        positions: 'recompute' keeps the model's own fixed sin-cos positions for its
            token count; 'interpolate' copies MinD-Vis's positions resampled with
            `interpolate_pos_embed`.
    Returns:
        a LoadReport; `report.table()` prints the per-key shape table.
    """
    if positions not in POSITIONS_MODES:
        raise CheckpointError(describe("positions", f"one of {POSITIONS_MODES}", repr(positions)))
    ckpt = safe_torch_load(path, extra_safe_globals=[(MindVisConfig, MindVisConfig.PICKLED_NAME)],
                           hint=MINDVIS_HINT)
    source = extract_state_dict(ckpt, path, wrappers=("model",))
    config = ckpt.get("config") if isinstance(ckpt, Mapping) else None
    report = LoadReport(str(path), source_config=config.as_dict() if isinstance(config, MindVisConfig) else {})
    merged = convert_mindvis_state(source, model.state_dict(), report, positions)
    model.load_state_dict(merged, strict=True)
    return report


def convert_mindvis_state(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                          report: LoadReport, positions: str = "recompute") -> dict[str, torch.Tensor]:
    """The model's state dict `target` with MinD-Vis's shared weights from `source` put in.

    Fills `report` (taken / new / ignored) and raises CheckpointError listing
    every carried key whose shape differs, that one side lacks, or that is unknown.
    """
    merged = dict(target)
    problems = []
    for key, value in source.items():
        shape = list(value.shape)
        if _matches(key, MINDVIS_CARRY):
            if key not in target:
                problems.append(f"unexpected  {key}  checkpoint {shape} (no such key in the model)")
            elif value.shape != target[key].shape:
                problems.append(f"shape       {key}  checkpoint {shape} vs model {list(target[key].shape)}")
            else:
                merged[key] = value.to(target[key].dtype)
                report.taken.append((key, shape))
        elif key in MINDVIS_POSITIONS:
            if positions == "interpolate" and key in target:
                resized = _resize_positions(key, value, target[key], problems)
                if resized is not None:
                    merged[key] = resized
                    report.taken.append((key, list(resized.shape)))
            else:
                report.ignored.append((key, shape, "fixed sin-cos positions, recomputed for the model's tokens"))
        elif _matches(key, MINDVIS_DROPPED):
            report.ignored.append((key, shape, next(r for p, r in MINDVIS_DROPPED.items() if key.startswith(p))))
        else:
            problems.append(f"unknown     {key}  checkpoint {shape} (not a MinD-Vis fMRI MAE key)")

    taken = {k for k, _ in report.taken}
    for key, value in target.items():
        if key in taken:
            continue
        if _matches(key, MINDVIS_CARRY):
            problems.append(f"missing     {key}  model {list(value.shape)} (not in the checkpoint)")
        elif key in MINDVIS_POSITIONS:
            report.new.append((key, list(value.shape), "fixed sin-cos positions of the model"))
        else:
            reason = next((r for p, r in LEA_NEW.items() if key.startswith(p)), "not in MinD-Vis")
            report.new.append((key, list(value.shape), reason))

    if problems:
        cfg = report.source_config
        cfg_note = (f" (checkpoint config: embed_dim {cfg.get('embed_dim')}, depth {cfg.get('depth')}, "
                    f"decoder_embed_dim {cfg.get('decoder_embed_dim')})") if cfg else ""
        raise CheckpointError(f"{report.source}: MinD-Vis weights do not fit the fMRI autoencoder{cfg_note}; "
                              f"{len(problems)} problems:{_listing(problems)}")
    return merged


def _resize_positions(key: str, value: torch.Tensor, ref: torch.Tensor, problems: list[str]) -> Optional[torch.Tensor]:
    if value.ndim != 3 or value.shape[-1] != ref.shape[-1]:
        problems.append(f"shape       {key}  checkpoint {list(value.shape)} vs model {list(ref.shape)} "
                        "(width differs; cannot interpolate)")
        return None
    return interpolate_pos_embed(value, ref.shape[1] - 1).to(ref.dtype)


# ---------------------------------------------------------------------------
# MaskGIT VQGAN tokenizer
# ---------------------------------------------------------------------------

FLAX_ROOT = "params/"
FLAX_RESBLOCK_PARTS = {       # release name inside a residual block -> Flax module
    "norm1": "GroupNorm_0", "conv1": "Conv_0",
    "norm2": "GroupNorm_1", "conv2": "Conv_1",
    "nin_shortcut": "Conv_2",
}
FLAX_WEIGHT_LEAF = {"conv": "kernel", "norm": "scale", "embedding": "codebook"}  # by module kind


@dataclass(frozen=True)
class VQGANLayout:
    """Level and block counts of a VQGAN, read from its state-dict keys."""

    n_levels: int          # len(ch_mult)
    n_blocks: int          # residual blocks per level
    n_mid: int             # mid residual blocks

    @classmethod
    def from_keys(cls, keys: Iterable[str]) -> "VQGANLayout":
        levels, blocks, mids = set(), set(), set()
        for key in keys:
            if m := re.match(r"encoder\.down\.(\d+)\.block\.(\d+)\.", key):
                levels.add(int(m[1]))
                blocks.add(int(m[2]))
            elif m := re.match(r"encoder\.mid\.(\d+)\.", key):
                mids.add(int(m[1]))
        if not levels or not mids:
            raise CheckpointError(describe("VQGAN model", "keys encoder.down.<i>.block.<j>.* and encoder.mid.<k>.*",
                                           "none"))
        return cls(max(levels) + 1, max(blocks) + 1, max(mids) + 1)


def _flax_module(key: str, layout: VQGANLayout) -> tuple[str, str]:
    """Release module path (without leaf) -> (Flax module path, module kind)."""
    parts = key.split(".")
    net = parts[0]
    if net == "quantizer":
        return "quantizer", "embedding"

    def resblock(index: int, rest: list[str]) -> tuple[str, str]:
        sub = FLAX_RESBLOCK_PARTS.get(rest[0])
        if sub is None:
            raise KeyError(key)
        return f"{net}/ResBlock_{index}/{sub}", "norm" if sub.startswith("GroupNorm") else "conv"

    n_down = layout.n_levels * layout.n_blocks
    if net == "encoder":
        if parts[1] == "conv_in":
            return "encoder/Conv_0", "conv"
        if parts[1] == "conv_out":
            return "encoder/Conv_1", "conv"
        if parts[1] == "norm_out":
            return "encoder/GroupNorm_0", "norm"
        if parts[1] == "down" and parts[3] == "block":
            return resblock(int(parts[2]) * layout.n_blocks + int(parts[4]), parts[5:])
        if parts[1] == "mid":
            return resblock(n_down + int(parts[2]), parts[3:])
    if net == "decoder":
        if parts[1] == "conv_in":
            return "decoder/Conv_0", "conv"
        if parts[1] == "conv_out":
            return f"decoder/Conv_{layout.n_levels}", "conv"
        if parts[1] == "norm_out":
            return "decoder/GroupNorm_0", "norm"
        if parts[1] == "mid":
            return resblock(int(parts[2]), parts[3:])
        if parts[1] == "up" and parts[3] == "block":
            return resblock(layout.n_mid + int(parts[2]) * layout.n_blocks + int(parts[4]), parts[5:])
        if parts[1] == "up" and parts[3] == "upsample":
            return f"decoder/Conv_{1 + int(parts[2])}", "conv"
    raise KeyError(key)


def flax_name(key: str, layout: VQGANLayout) -> str:
    """The '/'-joined Flax parameter path (under 'params/') holding release key `key`.

    MaskGIT's tokenizer names modules by creation order: the encoder's
    `Conv_0` (conv_in), `ResBlock_k` (level-major, then the mid blocks),
    `GroupNorm_0` (norm_out), `Conv_1` (conv_out); the decoder's `Conv_0`
    (conv_in), `ResBlock_k` (mid blocks first, then levels from the deepest),
    `Conv_1..` (the upsampling convs, deepest first), `GroupNorm_0`, and a last
    `Conv_<n_levels>` (conv_out); `quantizer/codebook`. Inside a residual block:
    `GroupNorm_0, Conv_0, GroupNorm_1, Conv_1` and the shortcut `Conv_2`.
    """
    module_path, leaf = key.rsplit(".", 1)
    module, kind = _flax_module(module_path, layout)
    if leaf == "bias":
        return f"{module}/bias"
    if leaf == "weight":
        return f"{module}/{FLAX_WEIGHT_LEAF[kind]}"
    raise KeyError(key)


def _from_flax(array: np.ndarray, kind: str) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if kind == "conv":
        return tensor.permute(3, 2, 0, 1).contiguous()     # HWIO -> OIHW
    return tensor


def flax_tree_to_state_dict(tree: Mapping[str, np.ndarray], model_keys: Mapping[str, torch.Tensor],
                            source: str | Path) -> tuple[dict[str, torch.Tensor], list[tuple[str, list[int], str]]]:
    """Map a flattened Flax tokenizer tree onto release names.

    Returns the state dict and the Flax entries left unused (e.g. optimiser state).
    """
    tree = {k[len(FLAX_ROOT):] if k.startswith(FLAX_ROOT) else k: v for k, v in tree.items()}
    layout = VQGANLayout.from_keys(model_keys)
    state, problems, used = {}, [], set()
    for key, ref in model_keys.items():
        try:
            name = flax_name(key, layout)
        except KeyError:
            problems.append(f"unmapped    {key}  model {list(ref.shape)} (no Flax counterpart known)")
            continue
        if name not in tree:
            problems.append(f"missing     {key}  model {list(ref.shape)} (Flax '{name}' not in the file)")
            continue
        kind = "conv" if name.endswith("/kernel") else "other"
        tensor = _from_flax(tree[name], kind)
        used.add(name)
        if tensor.shape != ref.shape:
            problems.append(f"shape       {key}  Flax '{name}' {list(tree[name].shape)} -> {list(tensor.shape)} "
                            f"vs model {list(ref.shape)}")
            continue
        state[key] = tensor.to(ref.dtype)
    if problems:
        raise CheckpointError(f"{source}: Flax tokenizer tree does not fit the VQGAN; "
                              f"{len(problems)} problems:{_listing(problems)}")
    unused = [(k, list(np.shape(v)), "not a tokenizer parameter") for k, v in tree.items() if k not in used]
    return state, unused


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with open_npz(path, "MaskGIT tokenizer: the flattened Flax parameter tree") as data:
            return {k: data[k] for k in data.files}
    except DataError as err:
        raise CheckpointError(str(err)) from None


def load_maskgit_vqgan(path: str | Path, model: nn.Module) -> LoadReport:
    """Load MaskGIT's ImageNet-256 tokenizer into a VQGAN with release parameter names.

    `path` is either a `.npz` of the flattened Flax tree (keys such as
    `params/encoder/ResBlock_0/Conv_0/kernel`; see the module docstring for the
    conversion), or a PyTorch / safetensors state dict already in release names.
    """
    path = _require_file(path, MASKGIT_HINT)
    target = model.state_dict()
    if path.suffix == NPZ_SUFFIX:
        state, unused = flax_tree_to_state_dict(_load_npz(path), target, path)
    else:
        state, unused = extract_state_dict(safe_torch_load(path), path), []
    load_state_dict_strict(model, state, path)
    return LoadReport(str(path), taken=[(k, list(v.shape)) for k, v in state.items()], ignored=unused)

