"""Hub-style model folders: `model.safetensors` (the weights) + `config.json` (what builds the network).

    <folder>/
        model.safetensors   every parameter and buffer, by the network's parameter names
        config.json         {"format": "lea-pretrained", "version": 1, "kind": ..., "model_config": {...}, ...}

`train.py` writes one beside every final model file (`fmri_autoencoder.pt` -> `fmri_autoencoder/`,
`align.pt` -> `align/`), and each network reads one with `Network.from_pretrained(folder)`
(`AlignmentHeads.from_pretrained` for the ridge heads, whose non-tensor state is in config.json). Nothing in a folder is pickled: the
weights are safetensors, everything else is JSON. Folders are written once (to a temporary name,
then renamed) and never overwritten.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from models.checkpoints import load_state_dict_strict
from utils.config import build, to_dict
from utils.errors import CheckpointError, ConfigError, describe

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PRETRAINED_FORMAT = "lea-pretrained"
PRETRAINED_VERSION = 1
REQUIRED_KEYS = ("format", "version", "kind")
KEY_SEPARATOR = "."  # nested state keys are joined with it in model.safetensors


def save_pretrained(folder: str | Path, kind: str, state_dict: Mapping[str, torch.Tensor],
                    **fields: Any) -> Path:
    """Write a new Hub-style folder; `fields` (JSON-able, e.g. model_config) go into config.json.

    Refuses an existing folder: a trained model is never replaced.
    """
    folder = Path(folder)
    if folder.exists():
        raise CheckpointError(describe(folder, "a new folder (trained models are never overwritten)",
                                       "it exists already"))
    tensors = {name: t.detach().to("cpu").clone().contiguous() for name, t in state_dict.items()}
    config = {"format": PRETRAINED_FORMAT, "version": PRETRAINED_VERSION, "kind": kind, **to_dict(dict(fields))}
    text = json.dumps(config, indent=2, sort_keys=True)  # fails early on values JSON cannot hold
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    staging.mkdir(parents=True)
    save_file(tensors, str(staging / WEIGHTS_NAME))
    (staging / CONFIG_NAME).write_text(text + "\n")
    os.rename(staging, folder)
    return folder


def read_config(folder: str | Path, kind: str) -> dict[str, Any]:
    """config.json of a Hub-style folder holding a `kind` network, checked; the weights are not read."""
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    for path in (config_path, folder / WEIGHTS_NAME):
        if not path.is_file():
            raise CheckpointError(describe(folder, f"a model folder holding {CONFIG_NAME} and {WEIGHTS_NAME} "
                                           "(written by train.py beside each final model file)",
                                           f"no {path.name}"))
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(describe(config_path, "a JSON object", f"invalid JSON ({err})")) from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(config, dict) or k not in config]
    if missing:
        raise CheckpointError(describe(config_path, f"keys {list(REQUIRED_KEYS)}", f"missing {missing}"))
    for key, expected in (("format", PRETRAINED_FORMAT), ("version", PRETRAINED_VERSION), ("kind", kind)):
        if config[key] != expected:
            raise CheckpointError(describe(f"{config_path} key '{key}'", repr(expected), repr(config[key])))
    return config


def read_pretrained(folder: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json as a dict, state dict) of a Hub-style folder holding a `kind` network."""
    config = read_config(folder, kind)
    weights = Path(folder) / WEIGHTS_NAME
    try:
        return config, load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise CheckpointError(describe(weights, "a readable safetensors file", f"{type(err).__name__}: {err}")) from err


def is_pretrained_folder(path: str | Path) -> bool:
    """True for a folder holding config.json (a Hub-style model folder, checked when read)."""
    return Path(path).is_dir() and (Path(path) / CONFIG_NAME).is_file()


def weights_file(path: str | Path) -> Path:
    """The file whose bytes are a model's weights: model.safetensors of a folder, else `path` itself
    (what sha256 records in results and provenance checks cover)."""
    return Path(path) / WEIGHTS_NAME if is_pretrained_folder(path) else Path(path)


def read_payload(folder: str | Path, kind: str) -> dict[str, Any]:
    """A folder read as the final model file it was written from: {'model': state dict, 'kind', ...}."""
    config, state = read_pretrained(folder, kind)
    return {**{k: v for k, v in config.items() if k not in ("format", "version")}, "model": state}


def split_tensors(state: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A nested state -> (its tensors under dotted keys, the same nesting without the tensors)."""
    tensors, plain = {}, {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[prefix + key] = value
        elif isinstance(value, Mapping):
            inner, plain[key] = split_tensors(value, prefix + key + KEY_SEPARATOR)
            tensors.update(inner)
        else:
            plain[key] = value
    return tensors, plain


def join_tensors(tensors: Mapping[str, torch.Tensor], plain: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Inverse of `split_tensors`."""
    state = {k: join_tensors(tensors, v, prefix + k + KEY_SEPARATOR) if isinstance(v, Mapping) else v
             for k, v in plain.items()}
    for key, value in tensors.items():
        if key.startswith(prefix) and KEY_SEPARATOR not in key[len(prefix):]:
            state[key[len(prefix):]] = value
    return state


class PretrainedMixin:
    """`save_pretrained(folder)` / `from_pretrained(folder)` for a network built from `config_class(...)`.

    Subclasses set `pretrained_kind` (the kind train.py writes) and `config_class`, and keep their
    config in `self.config`.
    """

    pretrained_kind: str
    config_class: type

    def save_pretrained(self, folder: str | Path, **metadata: Any) -> Path:
        return save_pretrained(folder, self.pretrained_kind, self.state_dict(),
                               **{**metadata, "model_config": to_dict(self.config)})

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "PretrainedMixin":
        """The network saved in `folder`, strictly loaded, in eval mode on the CPU."""
        config_json, state = read_pretrained(folder, cls.pretrained_kind)
        if not isinstance(config_json.get("model_config"), dict):
            raise CheckpointError(describe(Path(folder) / CONFIG_NAME, "key 'model_config' (a mapping)",
                                           repr(config_json.get("model_config"))))
        where = f"{Path(folder) / CONFIG_NAME} key 'model_config'"
        try:
            config = build(cls.config_class, dict(config_json["model_config"]), where)
        except ConfigError as err:
            raise CheckpointError(str(err)) from err
        model = cls(config)
        load_state_dict_strict(model, state, folder)
        return model.eval()
