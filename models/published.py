"""Published and released weights as first-class inputs of the image decoder and the LEA scripts.

The paper (spec 7) never trains a tokenizer and never trains MaskGIT from scratch:

- **MaskGIT's published ImageNet-256 tokenizer**, used frozen: `load_frozen_tokenizer` builds the
  VQGAN from the file itself (our `tokenizer.pt`, a plain state dict in the release's PyTorch names,
  or Google's Flax tree saved as `.npz`) and loads it strictly.
- **MaskGIT's published class-conditional ImageNet-256 transformer**, the start of every LEA
  decoder: `load_imagenet_transformer` takes every weight but the condition projection
  `decoder_embed.*` (new in LEA; it replaces the ImageNet class token), from the release's PyTorch
  names or from Google's Flax tree (`.npz`), and returns the taken / new / ignored table.
- **The LEA release's own checkpoint files** (`{'model': state_dict}` of DataParallel wrappers):
  `release_parts` splits them by prefix: fMRI files `module.transformer.<fMRI autoencoder keys>`,
  decoder files `module.transformer.<MaskGIT keys>` and `module.vqgan.<VQGAN keys>`
  (inference/weights.py builds and loads the networks).

Converting Google's Flax transformer checkpoint to `.npz` (where flax is installed; the same
command as for the tokenizer, see models/checkpoints.py)::

    python -c "import numpy as np, flax.serialization as s, flax.traverse_util as t; \
d = s.msgpack_restore(open('maskgit_imagenet256_checkpoint', 'rb').read()); \
np.savez('maskgit_imagenet256.npz', **{k: np.asarray(v) for k, v in t.flatten_dict(d, sep='/').items()})"

Note on the Flax model: `flax.linen.gelu` defaults to the tanh approximation, while the release's
PyTorch transformer (and this one) use the exact GELU; the weights carry over unchanged, the
activation differs by at most 4.7e-4 per unit.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from models.checkpoints import (FLAX_ROOT, NPZ_SUFFIX, LoadReport, VQGANLayout, _listing, _load_npz,
                                extract_state_dict, load_maskgit_vqgan, load_state_dict_strict, safe_torch_load,
                                state_dict_problems)
from models.hub import is_pretrained_folder
from models.maskgit import MaskGITTransformer
from models.vqgan import VQGAN, VQGANConfig
from utils.config import build
from utils.errors import CheckpointError, describe

TOKENIZER_KIND = "tokenizer"              # `kind` of train.py's tokenizer.pt
CONDITION_PREFIX = "decoder_embed."       # LEA's condition projection: never taken from ImageNet MaskGIT
CONDITION_REASON = "condition projection (image feature -> first token): new in LEA, replaces the class token"
MODULATION_KEY = re.compile(r"decoder\.\d+\.modulation\.")  # per-layer condition path of `condition: adaln`
MODULATION_REASON = "per-layer condition modulation (Model.condition: adaln): new in LEA, starts at zero"
RELEASE_FMRI_PREFIX = "transformer."      # inside DataParallel(Neural_fMRI2fMRI)
RELEASE_DECODER_PARTS = {"transformer.": "MaskGIT transformer", "vqgan.": "VQGAN tokenizer"}
IMAGENET_TRANSFORMER_HINT = ("MaskGIT's published class-conditional ImageNet-256 transformer: the release's "
                             "pretrains/MaskGIT_Trans_ImageNet256_checkpoint.pth, or Google's "
                             "maskgit_imagenet256_checkpoint converted to .npz (see models/published.py)")


def new_in_lea(key: str) -> str | None:
    """Why parameter `key` of the conditional transformer has no ImageNet counterpart, or None."""
    if key.startswith(CONDITION_PREFIX):
        return CONDITION_REASON
    if MODULATION_KEY.match(key):
        return MODULATION_REASON
    return None


# ---------------------------------------------------------------------------
# The published tokenizer, frozen
# ---------------------------------------------------------------------------

def vqgan_config_from_state(state: Mapping[str, torch.Tensor], token_grid: int, source: str | Path) -> VQGANConfig:
    """The VQGAN architecture a release-named state dict describes; `token_grid` fixes the resolution.

    Levels, blocks per level and mid blocks come from the key names; widths from the shapes
    (`encoder.conv_in` = ch_base, `encoder.down.<i>.block.<last>.conv2` = ch_base * ch_mult[i],
    `quantizer.embedding` = codebook). The weights do not fix `with_tanh`: the published tokenizer's
    False is used.
    """
    try:
        layout = VQGANLayout.from_keys(state)
        ch_base, in_ch = state["encoder.conv_in.weight"].shape[:2]
        ch_mult = []
        for level in range(layout.n_levels):
            width = state[f"encoder.down.{level}.block.{layout.n_blocks - 1}.conv2.weight"].shape[0]
            ch_mult.append(width // ch_base)
        num_codebook, dim_codebook = state["quantizer.embedding.weight"].shape
        return VQGANConfig(resolution=token_grid * 2 ** (layout.n_levels - 1), in_ch=int(in_ch),
                           out_ch=int(state["decoder.conv_out.weight"].shape[0]), ch_base=int(ch_base),
                           ch_mult=tuple(ch_mult), num_res_blocks=layout.n_blocks, num_res_mids=layout.n_mid,
                           ch_latent=int(state["encoder.conv_out.weight"].shape[0]),
                           num_codebook=int(num_codebook), dim_codebook=int(dim_codebook), with_tanh=False)
    except (KeyError, CheckpointError) as err:
        raise CheckpointError(describe(source, "a VQGAN state dict in the release's names (encoder.conv_in.weight, "
                                       "encoder.down.<i>.block.<j>.*, quantizer.embedding.weight, ...)",
                                       f"no key {err}" if isinstance(err, KeyError) else str(err))) from None


def load_frozen_tokenizer(path: str | Path, token_grid: Optional[int] = None,
                          model_config: Optional[Mapping[str, Any]] = None) -> tuple[VQGAN, str]:
    """A frozen VQGAN (eval, no gradients) from any tokenizer file, and a line saying what it is.

    Args:
        path: train.py's `tokenizer.pt` (carries its Model section) or the Hub-style folder beside it; a plain state dict in the
            release's names, bare or wrapped, `module.` prefixes allowed (MaskGIT's published tokenizer
            as the release ships it); or Google's Flax tree saved as `.npz`.
        token_grid: tokens per side of the MaskGIT transformer it serves; with a published file it
            sets the working resolution (None: the published 256 px). The caller checks that the
            tokenizer's grid and codebook fit its transformer.
        model_config: a `Model:` section describing a `.npz` tree whose architecture is not the
            published one (default: the published ImageNet-256 architecture).
    """
    path = Path(path)
    if is_pretrained_folder(path):
        return VQGAN.from_pretrained(path).requires_grad_(False), f"{path}: tokenizer folder written by train.py, frozen"
    if not path.is_file():
        raise CheckpointError(describe(path, "a tokenizer file (train.py's tokenizer.pt, MaskGIT's published "
                                       "ImageNet-256 tokenizer as a state dict, or its Flax tree as .npz)",
                                       "no such file"))
    if path.suffix == NPZ_SUFFIX:
        values = dict(model_config or {})
        if token_grid is not None and "resolution" not in values:
            values["resolution"] = token_grid * VQGANConfig(**values).downsample_factor
        vqgan = VQGAN(build(VQGANConfig, values, f"{path}: tokenizer architecture"))
        load_maskgit_vqgan(path, vqgan)
        what = f"{path}: published tokenizer (Flax tree), frozen"
    else:
        payload = safe_torch_load(path)
        if isinstance(payload, dict) and payload.get("kind") == TOKENIZER_KIND:
            vqgan = VQGAN(build(VQGANConfig, dict(payload["model_config"]), f"{path} key 'model_config'"))
            load_state_dict_strict(vqgan, payload["model"], path)
            what = f"{path}: tokenizer trained by train.py, frozen"
        else:
            state = extract_state_dict(payload, path)
            grid = token_grid if token_grid is not None else VQGANConfig().token_grid
            vqgan = VQGAN(vqgan_config_from_state(state, grid, path))
            load_state_dict_strict(vqgan, state, path)
            what = f"{path}: published tokenizer (state dict, {len(state)} tensors), frozen"
    return vqgan.eval().requires_grad_(False), what


# ---------------------------------------------------------------------------
# The published ImageNet-256 transformer
# ---------------------------------------------------------------------------

def _flax_module(names: dict[str, tuple[str, str]], ours: str, flax: str, kind: str) -> None:
    """Add the weight and bias of one module: kind 'dense' (kernel [in, out]) or 'ln' (scale)."""
    names[f"{ours}.weight"] = (f"{flax}/kernel", "dense") if kind == "dense" else (f"{flax}/scale", "copy")
    names[f"{ours}.bias"] = (f"{flax}/bias", "copy")


def flax_transformer_names(depth: int) -> dict[str, tuple[str, str]]:
    """Our parameter name -> (Flax path under 'params/', conversion) for a `depth`-layer MaskGIT.

    Conversions: 'copy'; 'dense' (Flax kernel [in, out] -> weight [out, in]); 'heads_in'
    (query/key/value kernel [C, H, D] -> [H*D, C]); 'heads_bias' ([H, D] -> [H*D]); 'heads_out'
    (output kernel [H, D, C] -> [C, H*D]).
    """
    names = {"token_emb.weight": ("Embed_0/word_embeddings/embedding", "copy"),
             "de_pos_emb.weight": ("Embed_0/position_embeddings/embedding", "copy"),
             "mlps_bias": ("MlmLayer_0/mlm_bias/bias", "copy")}
    _flax_module(names, "ln", "Embed_0/embeddings_ln", "ln")
    _flax_module(names, "mlps.0", "MlmLayer_0/mlm_dense", "dense")
    _flax_module(names, "mlps.2", "MlmLayer_0/mlm_ln", "ln")
    for i in range(depth):
        ours, flax = f"decoder.{i}.", f"TransformerLayer_{i}/"
        attn = f"{flax}Attention_0/self_attention/"
        for part in ("query", "key", "value"):
            names[f"{ours}self_attn.{part}.weight"] = (f"{attn}{part}/kernel", "heads_in")
            names[f"{ours}self_attn.{part}.bias"] = (f"{attn}{part}/bias", "heads_bias")
        names[f"{ours}self_attn.proj.weight"] = (f"{attn}out/kernel", "heads_out")
        names[f"{ours}self_attn.proj.bias"] = (f"{attn}out/bias", "copy")
        for module, (flax_module, kind) in {"norm1": ("Attention_0/attention_output_ln", "ln"),
                                            "linear1": ("Mlp_0/intermediate_output", "dense"),
                                            "linear2": ("Mlp_0/layer_output", "dense"),
                                            "norm2": ("Mlp_0/layer_output_ln", "ln")}.items():
            _flax_module(names, f"{ours}{module}", f"{flax}{flax_module}", kind)
    return names


def _flax_shape(shape: torch.Size, how: str, num_heads: int) -> list[int]:
    """The Flax shape of a parameter of ours with `shape` (the heads split out as the Flax module does)."""
    if how == "dense":
        return [shape[1], shape[0]]
    if how == "heads_in":
        return [shape[1], num_heads, shape[0] // num_heads]
    if how == "heads_bias":
        return [num_heads, shape[0] // num_heads]
    if how == "heads_out":
        return [num_heads, shape[1] // num_heads, shape[0]]
    return list(shape)


def _convert_flax(array: np.ndarray, how: str) -> torch.Tensor:
    """A Flax parameter (shape already checked) in our layout."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if how == "dense":
        return t.T.contiguous()                                        # [in, out] -> [out, in]
    if how == "heads_in":
        return t.reshape(t.shape[0], -1).T.contiguous()                # [C, H, D] -> [H*D, C]
    if how == "heads_bias":
        return t.reshape(-1)                                           # [H, D] -> [H*D]
    if how == "heads_out":
        return t.reshape(-1, t.shape[-1]).T.contiguous()               # [H, D, C] -> [C, H*D]
    return t


def flax_transformer_state(tree: Mapping[str, np.ndarray], target: Mapping[str, torch.Tensor], depth: int,
                           num_heads: int, source: str | Path) -> tuple[dict[str, torch.Tensor], list[tuple[str, list[int], str]]]:
    """Google's flattened Flax MaskGIT tree -> our names (every key of `target` but those `new_in_lea`).

    Returns the state dict and the Flax entries left unused. Raises CheckpointError listing every
    missing entry and every shape that does not fit, by Flax name and by our name.
    """
    tree = {k[len(FLAX_ROOT):] if k.startswith(FLAX_ROOT) else k: v for k, v in tree.items()}
    names = flax_transformer_names(depth)
    state, problems, used = {}, [], set()
    for key, ref in target.items():
        if new_in_lea(key):
            continue
        if key not in names:
            problems.append(f"unmapped    {key}  model {list(ref.shape)} (no Flax counterpart known)")
            continue
        flax, how = names[key]
        if flax not in tree:
            problems.append(f"missing     {key}  model {list(ref.shape)} (Flax '{flax}' not in the file)")
            continue
        used.add(flax)
        expected = _flax_shape(ref.shape, how, num_heads)
        if list(np.shape(tree[flax])) != expected:
            problems.append(f"shape       {key}  Flax '{flax}' {list(np.shape(tree[flax]))} vs expected {expected} "
                            f"(model {list(ref.shape)}, {num_heads} heads)")
            continue
        state[key] = _convert_flax(tree[flax], how).to(ref.dtype)
    unused = [(k, list(np.shape(v)), "not a parameter of the conditional transformer")
              for k, v in tree.items() if k not in used]
    layers = [k for k, _, _ in unused if re.match(r"TransformerLayer_\d+/", k)]
    problems += [f"unexpected  Flax '{k}'  (a layer beyond the model's depth {depth})" for k in layers]
    if problems:
        raise CheckpointError(f"{source}: Flax MaskGIT tree does not fit the transformer; "
                              f"{len(problems)} problems:{_listing(problems)}")
    return state, unused


def load_imagenet_transformer(path: str | Path, model: MaskGITTransformer) -> LoadReport:
    """Start `model` from MaskGIT's published class-conditional ImageNet-256 transformer.

    Every weight but the condition projection `decoder_embed.*` (and, with `condition: adaln`, the
    per-layer `decoder.<i>.modulation.*`) is taken and must be present with the model's shape; those
    keep the model's initialisation (such keys in the file are ignored). Nothing is loaded unless
    everything fits.

    `path`: a `.npz` of Google's flattened Flax tree, or a PyTorch / safetensors state dict in our
    (the release's) names, bare or wrapped in `{'model': ...}`, `module.` prefixes allowed.
    Returns the LoadReport; `report.table()` is the taken / new / ignored table.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found (Init.transformer); {IMAGENET_TRANSFORMER_HINT}")
    target = model.state_dict()
    report = LoadReport(str(path))
    if path.suffix == NPZ_SUFFIX:
        state, report.ignored = flax_transformer_state(_load_npz(path), target, model.config.depth,
                                                        model.config.num_heads, path)
    else:
        given = extract_state_dict(safe_torch_load(path), path)
        state = {k: v for k, v in given.items() if not new_in_lea(k)}
        report.ignored = [(k, list(v.shape), "LEA's condition path is trained anew")
                          for k, v in given.items() if new_in_lea(k)]
        expected = {k: v for k, v in target.items() if not new_in_lea(k)}
        problems = state_dict_problems(expected, state)
        if problems:
            raise CheckpointError(f"{path}: ImageNet MaskGIT weights do not fit the transformer "
                                  f"(vocabulary {model.config.vocab_size}, {model.config.num_tokens + 1} positions, "
                                  f"depth {model.config.depth}, width {model.config.embed_dim}); "
                                  f"{len(problems)} problems:{_listing(problems)}")
    merged = dict(target)
    for key, value in state.items():
        merged[key] = value.to(target[key].dtype)
        report.taken.append((key, list(value.shape)))
    report.new = [(k, list(v.shape), new_in_lea(k)) for k, v in target.items() if new_in_lea(k)]
    model.load_state_dict(merged, strict=True)
    return report


# ---------------------------------------------------------------------------
# The LEA release's checkpoint files
# ---------------------------------------------------------------------------

def release_parts(payload: Any, path: str | Path, parts: Mapping[str, str]) -> dict[str, dict[str, torch.Tensor]]:
    """Split the state dict of a release file (`payload`, read from `path`) by the prefixes of `parts`,
    after DataParallel's `module.`: e.g. `module.transformer.blocks.0...` -> parts['transformer.'].

    Raises CheckpointError listing every key that has none of them, with its shape.
    """
    state = extract_state_dict(payload, path)      # strips a shared `module.`
    out: dict[str, dict[str, torch.Tensor]] = {p: {} for p in parts}
    stray = []
    for key, value in state.items():
        prefix = next((p for p in parts if key.startswith(p)), None)
        if prefix is None:
            stray.append(f"unexpected  {key}  checkpoint {list(value.shape)}")
        else:
            out[prefix][key[len(prefix):]] = value
    missing = [f"missing     every '{p}*' key ({what})" for p, what in parts.items() if not out[p]]
    if stray or missing:
        expected = ", ".join(f"module.{p}*" for p in parts)
        raise CheckpointError(f"{path}: not a release checkpoint of this kind (expected keys {expected}); "
                              f"{len(stray) + len(missing)} problems:{_listing(missing + stray)}")
    return out
