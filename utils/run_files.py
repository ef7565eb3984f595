"""A `train.py` run folder wherever a weight file is accepted.

`train.py` writes each run to `<out_dir>/<name>_<YYYYmmdd-HHMMSS>/` with its final file inside
(fmri_autoencoder.pt, tokenizer.pt, maskgit.pt, align.pt). A path naming a weight may be:

1. the file itself;
2. a run folder holding `<final name>`;
3. a folder of run folders: the newest run (by the final file's modification time) that holds it;
4. a run name `<out_dir>/<name>` (no such path): the newest run `<out_dir>/<name>_<date-time>/<final name>`;
5. a missing `<folder>/<final name>`: the newest `<folder>/*/<final name>` (where `train.py align`
   puts its runs when `Checkpoints.align` is `<folder>/align.pt`).

`candidates` lists every match, newest first, so a caller can pick the newest one that fits.
"""
from __future__ import annotations

import re
from pathlib import Path

RUN_STAMP = re.compile(r"\d{8}-\d{6}(-\d+)?")   # what utils.io.new_run_dir appends to a run name


def _newest_first(files: list[Path]) -> list[Path]:
    return sorted((f for f in files if f.is_file()), key=lambda f: (f.stat().st_mtime, str(f)), reverse=True)


def candidates(path: str | Path, final_name: str) -> list[Path]:
    """Weight files that `path` may mean (rules in the module docstring), newest first; [] when none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        if (path / final_name).is_file():
            return [path / final_name]
        return _newest_first(list(path.glob(f"*/{final_name}")))
    parent = path.parent
    if not parent.is_dir():
        return []
    if path.name == final_name:
        return _newest_first(list(parent.glob(f"*/{final_name}")))
    runs = [f for f in parent.glob(f"{path.name}_*/{final_name}")
            if RUN_STAMP.fullmatch(f.parent.name[len(path.name) + 1:])]
    return _newest_first(runs)


def resolve(path: str | Path, final_name: str) -> Path:
    """The newest weight file `path` may mean, or `path` itself when nothing matches (the caller reports it)."""
    found = candidates(path, final_name)
    return found[0] if found else Path(path)
