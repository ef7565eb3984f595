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

from models.hub import weights_file
from models.image_features import HANDCRAFTED_REVISION
from utils.errors import CheckpointError
from utils.io import file_sha256

MISMATCH_NAMES = ("tokenizer", "features", "align")
FEATURE_KEYS = ("backend", "dim", "normalize")      # what changes the meaning of a feature vector
OPEN_CLIP_KEYS = ("model",)                         # also compared for the open_clip backend
HANDCRAFTED_KEYS = ("revision",)                    # also compared for the handcrafted backend
BACKEND_KEYS = {"open_clip": OPEN_CLIP_KEYS, "handcrafted": HANDCRAFTED_KEYS}
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


def current_features(features: Mapping[str, Any]) -> dict[str, Any]:
    """A config's Features section as files record it: with the handcrafted features' revision
    (a record written before revisions has none, so it differs from every current one)."""
    out = dict(features)
    if out.get("backend") == "handcrafted":
        out["revision"] = HANDCRAFTED_REVISION
    return out


def feature_signature(features: Mapping[str, Any]) -> dict[str, Any]:
    """The feature settings that must agree: backend, dim, normalize (and model for open_clip,
    revision for handcrafted)."""
    keys = FEATURE_KEYS + BACKEND_KEYS.get(features.get("backend"), ())
    return {k: features.get(k) for k in keys}


def _status(recorded: Any, given: Any) -> str:
    if recorded is None:
        return UNRECORDED
    return OK if recorded == given else MISMATCH


def _short(sha: Optional[str]) -> Optional[str]:
    return sha[:SHORT_SHA] if sha else sha


def file_check(name: str, what: str, recorded: Mapping[str, Any], path: str | Path, sha: str, how: str,
               require_record: bool) -> Check:
    """A recorded {'path', 'sha256'} against the file given (`path`, `sha`); a missing record is
    'unrecorded', or a mismatch when `require_record`."""
    status = _status(recorded.get("sha256"), sha)
    return Check(name, what,
                 {"path": recorded.get("path"), "sha256": _short(recorded["sha256"])} if recorded.get("sha256") else None,
                 {"path": str(path), "sha256": _short(sha)},
                 MISMATCH if require_record and status == UNRECORDED else status, how)


def feature_check(name: str, what: str, recorded: Optional[Mapping[str, Any]], features: Mapping[str, Any],
                  how: str, require_record: bool) -> Check:
    """Recorded feature settings against the config's Features (compared by `feature_signature`)."""
    recorded_sig = feature_signature(recorded) if recorded else None
    given = feature_signature(current_features(features))
    status = _status(recorded_sig, given)
    return Check(name, what, recorded_sig, given, MISMATCH if require_record and status == UNRECORDED else status, how)


def decoder_checks(record: Mapping[str, Any], decoder: str | Path, tokenizer: str | Path, tokenizer_sha: str,
                   features: Mapping[str, Any]) -> list[Check]:
    """Compare a decoder file's `tokenizer` / `features` records with the tokenizer and features given."""
    return [
        file_check("tokenizer", f"decoder {decoder} vs tokenizer {tokenizer}", record.get("tokenizer") or {},
                   tokenizer, tokenizer_sha,
                   "decode with the tokenizer the decoder was trained with (--tokenizer-ckpt), or retrain the "
                   "decoder with this tokenizer (train.py maskgit --set Init.tokenizer=...)", require_record=False),
        feature_check("features", f"decoder {decoder} vs this config's Features", record.get("features"), features,
                      "set Features to the decoder's (--set Features.KEY=VALUE), or retrain the decoder with these",
                      require_record=False),
    ]


def alignment_checks(record: Mapping[str, Any], heads: str | Path, fmri: str | Path, fmri_sha: str,
                     features: Mapping[str, Any]) -> list[Check]:
    """Compare alignment heads' records with the fMRI checkpoint and features given (a missing record
    is refused like a mismatch)."""
    refit = ("refit the heads: python train.py align --config <this LEA config> (LEA then finds the new run), "
             "or --align <a path with no heads> to have LEA fit them on the training set")
    return [
        file_check("align", f"alignment heads {heads} vs fMRI checkpoint {fmri}", record.get("fmri_checkpoint") or {},
                   fmri, fmri_sha, refit, require_record=True),
        feature_check("align", f"alignment heads {heads} vs this config's Features", record.get("features"),
                      features, refit, require_record=True),
    ]


def alignment_provenance(fmri_checkpoint: str | Path, features: Mapping[str, Any]) -> dict[str, Any]:
    """What alignment heads record: the fMRI checkpoint (path, sha256) and the feature settings."""
    return {"fmri_checkpoint": {"path": str(fmri_checkpoint), "sha256": file_sha256(weights_file(fmri_checkpoint))},
            "features": feature_signature(current_features(features))}


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
