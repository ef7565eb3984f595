"""Safe file output: atomic writes, time-stamped run folders, file hashes; whether the console is a terminal.

Nothing here ever writes over an existing result: run folders get a fresh
time-stamped name, and single files are written to a temporary name in the same
folder and renamed into place only once complete.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


def progress_wanted(requested: bool = True) -> bool:
    """Progress bars only when asked for and both stdout and stderr are terminals: a log file or a
    pipe gets plain lines instead of thousands of bar updates."""
    return requested and sys.stdout.isatty() and sys.stderr.isatty()


def _atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write through `write(fileobj)` to a temp file, fsync, then rename onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    return _atomic_write(path, lambda f: np.save(f, array))


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create and return a new folder `root/<name>_<YYYYmmdd-HHMMSS>[-k]`.

    The folder is created with `exist_ok=False`, so two runs started in the same
    second get distinct folders and no run ever writes into another's.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        candidate = root / (f"{name}_{stamp}" if k == 0 else f"{name}_{stamp}-{k}")
        try:
            candidate.mkdir(exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder under {root}")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
