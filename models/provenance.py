"""Consistency of the files LEA combines: checked, not assumed.

- A decoder (`maskgit.pt`) records the tokenizer its tokens came from (sha256) and the image
  features it was conditioned on; decoding with another tokenizer or other features produces
  garbage silently, so LEA compares both with what it is given.
- Alignment heads (`align.pt`) record the fMRI checkpoint whose latents they were fitted on
  (sha256) and the features of their targets; they are refused for another fMRI checkpoint or
  other features.

Each refusal names both sides and how to proceed: refit / retrain, or accept the mismatch
explicitly (`--accept-mismatch NAME`, `Checkpoints.accept_mismatch`), which the results record.
A file that records nothing (the LEA release's decoder, older runs) is reported as unchecked;
alignment heads that record nothing are refused like a mismatch, since they are cheap to refit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from utils.errors import CheckpointError
from utils.io import file_sha256

MISMATCH_NAMES = ("tokenizer", "features", "align")
FEATURE_KEYS = ("backend", "dim", "normalize")      # what changes the meaning of a feature vector
OPEN_CLIP_KEYS = ("model",)                         # also compared for the open_clip backend
SHORT_SHA = 12
OK, MISMATCH, UNRECORDED, ACCEPTED = "ok", "mismatch", "unrecorded", "accepted mismatch"


@dataclass
class Check:
    """One comparison between what a file records and what LEA is given."""

    name: str            # one of MISMATCH_NAMES
    what: str            # e.g. "decoder maskgit.pt vs Checkpoints.tokenizer"
    recorded: Any
    given: Any
    status: str          # ok | mismatch | unrecorded | accepted mismatch
    how: str             # how to proceed when it does not match

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_signature(features: Mapping[str, Any]) -> dict[str, Any]:
    """The feature settings that must agree: backend, dim, normalize (and model for open_clip)."""
    keys = FEATURE_KEYS + (OPEN_CLIP_KEYS if features.get("backend") == "open_clip" else ())
    return {k: features.get(k) for k in keys}


def _status(recorded: Any, given: Any) -> str:
    if recorded is None:
        return UNRECORDED
    return OK if recorded == given else MISMATCH


def _short(sha: Optional[str]) -> Optional[str]:
    return sha[:SHORT_SHA] if sha else sha


def decoder_checks(record: Mapping[str, Any], decoder: str | Path, tokenizer: str | Path, tokenizer_sha: str,
                   features: Mapping[str, Any]) -> list[Check]:
    """Compare a decoder file's `tokenizer` / `features` records with the tokenizer and features given."""
    tok = record.get("tokenizer") or {}
    recorded_sha = tok.get("sha256")
    recorded_feat = record.get("features")
    given_feat = feature_signature(features)
    return [
        Check("tokenizer", f"decoder {decoder} vs tokenizer {tokenizer}",
              {"path": tok.get("path"), "sha256": _short(recorded_sha)} if recorded_sha else None,
              {"path": str(tokenizer), "sha256": _short(tokenizer_sha)},
              _status(recorded_sha, tokenizer_sha),
              "decode with the tokenizer the decoder was trained with (--tokenizer-ckpt), or retrain the "
              "decoder with this tokenizer (train.py maskgit --set Init.tokenizer=...)"),
        Check("features", f"decoder {decoder} vs this config's Features",
              feature_signature(recorded_feat) if recorded_feat else None, given_feat,
              _status(feature_signature(recorded_feat) if recorded_feat else None, given_feat),
              "set Features to the decoder's (--set Features.KEY=VALUE), or retrain the decoder with these"),
    ]


def alignment_checks(record: Mapping[str, Any], heads: str | Path, fmri: str | Path, fmri_sha: str,
                     features: Mapping[str, Any]) -> list[Check]:
    """Compare alignment heads' records with the fMRI checkpoint and features given."""
    fm = record.get("fmri_checkpoint") or {}
    recorded_sha = fm.get("sha256")
    recorded_feat = record.get("features")
    given_feat = feature_signature(features)
    refit = ("refit the heads (python train.py align ..., or drop --align / Checkpoints.align so that LEA fits "
             "them on the training set)")
    fmri_status = _status(recorded_sha, fmri_sha)
    feat_status = _status(feature_signature(recorded_feat) if recorded_feat else None, given_feat)
    return [
        Check("align", f"alignment heads {heads} vs fMRI checkpoint {fmri}",
              {"path": fm.get("path"), "sha256": _short(recorded_sha)} if recorded_sha else None,
              {"path": str(fmri), "sha256": _short(fmri_sha)},
              MISMATCH if fmri_status == UNRECORDED else fmri_status, refit),
        Check("align", f"alignment heads {heads} vs this config's Features",
              feature_signature(recorded_feat) if recorded_feat else None, given_feat,
              MISMATCH if feat_status == UNRECORDED else feat_status, refit),
    ]


def alignment_provenance(fmri_checkpoint: str | Path, features: Mapping[str, Any]) -> dict[str, Any]:
    """What alignment heads record: the fMRI checkpoint (path, sha256) and the feature settings."""
    return {"fmri_checkpoint": {"path": str(fmri_checkpoint), "sha256": file_sha256(fmri_checkpoint)},
            "features": feature_signature(features)}


def enforce(checks: Sequence[Check], accepted: Sequence[str]) -> list[dict[str, Any]]:
    """Raise CheckpointError for every mismatch not in `accepted`; return the checks as records.

    Accepted mismatches are kept in the records with status 'accepted mismatch'.
    """
    refused = []
    for check in checks:
        if check.status == MISMATCH:
            if check.name in accepted:
                check.status = ACCEPTED
            else:
                refused.append(check)
    if refused:
        lines = [f"- {c.what}:\n    recorded: {c.recorded if c.recorded is not None else 'nothing'}\n"
                 f"    given:    {c.given}\n    to proceed: {c.how}, or accept it with --accept-mismatch {c.name}"
                 " (recorded in the results)" for c in refused]
        raise CheckpointError(f"{len(refused)} inconsistent input(s):\n" + "\n".join(lines))
    return [c.as_dict() for c in checks]
