"""The weights of one LEA subject, from whatever the user has: train.py files or run folders, the
LEA release's checkpoint files, MaskGIT's published tokenizer; checked for consistency.

- fMRI autoencoder: train.py's `fmri_autoencoder.pt`, or the release's `checkpoints/GOD_sbj1/
  checkpoint.pth` (`module.transformer.*`, no config: the architecture comes from
  Checkpoints.fmri_config, default the paper's fMRI config, plus the subject's ROI groups).
- Decoder: train.py's `maskgit.pt`, or the release's `checkpoints/ImageDecoder_MaskGIT/checkpoint.pth`
  (`module.transformer.*` and `module.vqgan.*`; the architecture from Checkpoints.maskgit_config).
  As in the release, images are decoded by the tokenizer of Checkpoints.tokenizer (MaskGIT's
  published one, unchanged): a release file's own VQGAN weights are checked, compared with it, and
  not used.
- Tokenizer: anything `models.published.load_frozen_tokenizer` reads.
- Alignment heads: the newest of the matching files (utils/run_files.py) fitted on this fMRI
  checkpoint with these features; refused otherwise (models/provenance.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from datasets.common import SubjectData
from models.alignment import AlignmentHeads
from models.checkpoints import load_state_dict_strict, safe_torch_load
from models.fmri_autoencoder import FMRIAutoencoder, FMRIAutoencoderConfig
from models.lea import check_fmri_fits, network_from_payload
from models.maskgit import MaskGITConfig, MaskGITTransformer
from models.provenance import alignment_checks, decoder_checks, enforce
from models.published import RELEASE_DECODER_PARTS, RELEASE_FMRI_PREFIX, load_frozen_tokenizer, release_parts
from models.vqgan import VQGAN
from utils.config import LEAConfig, build, read_yaml, to_dict
from utils.errors import CheckpointError, ConfigError, describe
from models.hub import is_pretrained_folder, read_payload, weights_file
from utils.io import file_sha256
from utils.run_files import candidates

ALIGN_FILE = "align.pt"      # train.py align's final file


@dataclass
class SubjectWeights:
    fmri_ae: FMRIAutoencoder
    tokenizer: VQGAN
    maskgit: MaskGITTransformer
    records: dict[str, dict[str, Any]]          # per weight: path, sha256 and what the file was
    consistency: list[dict[str, Any]] = field(default_factory=list)


def model_section(config_file: str, where: str) -> dict[str, Any]:
    """The `Model:` section of a stage config (describes a release file, which carries no config)."""
    values = read_yaml(config_file).get("Model")
    if not isinstance(values, dict):
        raise ConfigError(describe(f"{config_file} ({where})", "a stage config with a Model section", "none"))
    return values


def _record(path: Path, what: str) -> dict[str, Any]:
    return {"path": str(path), "sha256": file_sha256(weights_file(path)), "file": what}


def read_weights(path: Path, kind: str) -> Any:
    """A weight file read safely, or a Hub-style folder read as the model file it was written from."""
    return read_payload(path, kind) if is_pretrained_folder(path) else safe_torch_load(path)


def load_fmri(path: Path, data: SubjectData, config_file: str) -> tuple[FMRIAutoencoder, dict[str, Any]]:
    """The subject's fMRI autoencoder from a train.py file or a release file; its ROI groups are checked."""
    payload = read_weights(path, "fmri_autoencoder")
    if isinstance(payload, dict) and "kind" in payload:
        model = network_from_payload("fmri_autoencoder", payload, path,
                                     expect={"dataset": data.dataset, "subject": data.subject})
        what = "train.py fmri_autoencoder.pt"
    else:
        state = release_parts(payload, path, {RELEASE_FMRI_PREFIX: "fMRI autoencoder"})[RELEASE_FMRI_PREFIX]
        values = {**model_section(config_file, "Checkpoints.fmri_config"), "roi_patch": list(data.roi_patch)}
        model = FMRIAutoencoder(build(FMRIAutoencoderConfig, values, f"{config_file}: Model"))
        load_state_dict_strict(model, state, f"{path} (release fMRI file, architecture from {config_file} and "
                                             f"{data.subject}'s ROI groups {list(data.roi_patch)})")
        what = f"release fMRI checkpoint (module.transformer.*), architecture from {config_file}"
    check_fmri_fits(model, data.roi_patch, str(path), data.subject)
    return model.eval(), _record(path, what)


def load_decoder(maskgit_path: Path, tokenizer_path: Path, cfg: LEAConfig, config_file: str,
                 log: Callable[[str], None]) -> tuple[MaskGITTransformer, VQGAN, dict, list[dict[str, Any]]]:
    """Transformer + frozen tokenizer, their records and the consistency checks (raises on a refused mismatch)."""
    payload = read_weights(maskgit_path, "maskgit")
    release_vqgan = None
    if isinstance(payload, dict) and "kind" in payload:
        maskgit = network_from_payload("maskgit", payload, maskgit_path)
        provenance, what = payload, "train.py maskgit.pt"
    else:
        parts = release_parts(payload, maskgit_path, RELEASE_DECODER_PARTS)
        maskgit = MaskGITTransformer(build(MaskGITConfig, model_section(config_file, "Checkpoints.maskgit_config"),
                                           f"{config_file}: Model"))
        load_state_dict_strict(maskgit, parts["transformer."], f"{maskgit_path} (module.transformer.*)")
        release_vqgan, provenance = parts["vqgan."], {}
        what = f"release decoder checkpoint (module.transformer.*, module.vqgan.*), architecture from {config_file}"
    tokenizer, tokenizer_what = load_frozen_tokenizer(tokenizer_path, maskgit.config.token_grid)
    t, m = tokenizer.config, maskgit.config
    if (t.token_grid, t.num_codebook) != (m.token_grid, m.num_codebook):
        raise CheckpointError(describe(f"{tokenizer_path} (tokenizer) for decoder {maskgit_path}",
                                       f"{m.token_grid} x {m.token_grid} tokens from {m.num_codebook} codes",
                                       f"{t.token_grid} x {t.token_grid} tokens from {t.num_codebook} codes"))
    decoder_record = _record(maskgit_path, what)
    if release_vqgan is not None:
        own = VQGAN(t)
        load_state_dict_strict(own, release_vqgan, f"{maskgit_path} (module.vqgan.*)")
        same = all(torch.equal(v, tokenizer.state_dict()[k]) for k, v in own.state_dict().items())
        decoder_record["own_vqgan"] = ("identical to the tokenizer used" if same else
                                       "differs from the tokenizer used; not used (the release decodes with the "
                                       "published tokenizer, loaded last)")
    tokenizer_sha = file_sha256(weights_file(tokenizer_path))
    checks = enforce(decoder_checks(provenance, maskgit_path, tokenizer_path, tokenizer_sha, to_dict(cfg.features)),
                     cfg.checkpoints.accept_mismatch)
    for check in checks:
        if check["status"] != "ok":
            log(f"consistency: {check['what']}: {check['status']}")
    records = {"maskgit": decoder_record,
               "tokenizer": {"path": str(tokenizer_path), "sha256": tokenizer_sha, "file": tokenizer_what}}
    return maskgit.eval(), tokenizer, records, checks


def load_subject_weights(cfg: LEAConfig, paths: dict[str, Path], data: SubjectData, fmri_config: str,
                         maskgit_config: str, log: Callable[[str], None] = print) -> SubjectWeights:
    fmri_ae, fmri_record = load_fmri(paths["fmri"], data, fmri_config)
    maskgit, tokenizer, records, checks = load_decoder(paths["maskgit"], paths["tokenizer"], cfg, maskgit_config, log)
    return SubjectWeights(fmri_ae, tokenizer, maskgit, {"fmri": fmri_record, **records}, checks)


def find_alignment(align_path: str | Path, fmri: dict[str, Any], cfg: LEAConfig,
                   log: Callable[[str], None] = print) -> tuple[Optional[AlignmentHeads], Optional[Path], list]:
    """Alignment heads for this fMRI checkpoint and these features, or (None, None, []) when none exist.

    Among the files `align_path` may mean (newest first) the first fitted on this fMRI checkpoint
    with these features is used; when none is, the newest is checked and refused (unless accepted).
    """
    found = candidates(align_path, ALIGN_FILE)
    if not found:
        return None, None, []
    features = to_dict(cfg.features)
    for path in found:
        heads = AlignmentHeads.load(path)
        checks = alignment_checks(heads.provenance, path, fmri["path"], fmri["sha256"], features)
        if all(c.status == "ok" for c in checks):
            return heads, path, enforce(checks, cfg.checkpoints.accept_mismatch)
    heads = AlignmentHeads.load(found[0])
    checks = enforce(alignment_checks(heads.provenance, found[0], fmri["path"], fmri["sha256"], features),
                     cfg.checkpoints.accept_mismatch)
    log(f"consistency: alignment heads {found[0]} used despite a mismatch (--accept-mismatch align)")
    return heads, found[0], checks

