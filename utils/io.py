"""Safe file input and output: array readers, atomic writes, run folders, file hashes; whether the
console is a terminal.

Nothing here ever writes over an existing result: run folders get a fresh
time-stamped name, and single files are written to a temporary name in the same
folder and renamed into place only once complete. A folder or file that cannot
be written (permissions, a file in the way, disk full) is an `OutputError`
naming it; a `.npy`/`.npz` file that cannot be read (truncated by an interrupted
download, corrupted, not an array file) is a `DataError` naming it. Pickled
arrays are never read here.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from utils.errors import DataError, OutputError, describe

# what reading a damaged .npy/.npz raises inside numpy and zipfile
ARRAY_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)
UNREADABLE = "unreadable: the file is truncated or corrupted (an interrupted download or copy?); " \
             "copy or download it again"


def _cannot_write(path: Path, err: OSError) -> OutputError:
    reason = err.strerror or type(err).__name__
    where = err.filename or path
    return OutputError(describe(where, "a location this process can write to, with free space",
                                f"{reason}"))


def progress_wanted(requested: bool = True) -> bool:
    """Progress bars only when asked for and both stdout and stderr are terminals: a log file or a
    pipe gets plain lines instead of thousands of bar updates."""
    return requested and sys.stdout.isatty() and sys.stderr.isatty()


def _atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write through `write(fileobj)` to a temp file, fsync, then rename onto `path`."""
    path = Path(path)
    ensure_output_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _cannot_write(path, err) from None
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        raise _cannot_write(path, err) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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


@contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """A new hidden sibling of `out` (`.<out>.<random>`) to fill; when the block ends normally it takes
    `out`'s place (an existing `out` is first moved into `.<out>.old.<random>`, then removed), and when
    the block raises it is removed. Callers decide beforehand whether `out` may be replaced."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield work
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(work, out)
            shutil.rmtree(old)
        else:
            os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create and return a new folder `root/<name>_<YYYYmmdd-HHMMSS>[-k]`.

    The folder is created with `exist_ok=False`, so two runs started in the same
    second get distinct folders and no run ever writes into another's.
    """
    root = ensure_output_dir(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        candidate = root / (f"{name}_{stamp}" if k == 0 else f"{name}_{stamp}-{k}")
        try:
            candidate.mkdir(exist_ok=False)
            return candidate
        except FileExistsError:
            continue
        except OSError as err:
            raise _cannot_write(candidate, err) from None
    raise OutputError(describe(root, "room for a new run folder", f"1000 folders named {name}_{stamp}*"))


def ensure_output_dir(folder: str | Path) -> Path:
    """Create `folder` (and its parents) if needed; OutputError when that is impossible or it is not writable.

    Names the culprit: the folder itself, or the file that stands where a folder should be.
    """
    folder = Path(folder)
    for part in [folder, *folder.parents]:
        if part.exists() and not part.is_dir():
            raise OutputError(describe(folder, "a folder to write results into",
                                       f"{part} is a file, not a folder" if part != folder else "a file"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _cannot_write(folder, err) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(describe(folder, "a folder this process can write to", "no write permission"))
    return folder


# ---------------------------------------------------------------------------
# Reading arrays
# ---------------------------------------------------------------------------

def require_file(path: Path, what: str) -> Path:
    """Return `path` if it is a file, else raise DataError saying what it should hold."""
    if not path.is_file():
        raise DataError(describe(path, f"an existing file ({what})", "no such file"))
    return path


def load_npy(path: str | Path, what: str, mmap: bool = False) -> np.ndarray:
    """A `.npy` array (never a pickle); DataError naming the file when missing, truncated or corrupted."""
    path = Path(path)
    require_file(path, what)
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ARRAY_READ_ERRORS as err:
        raise DataError(describe(path, f"a complete .npy array file ({what})", _reason(err))) from None
    if not isinstance(array, np.ndarray):
        raise DataError(describe(path, f"a .npy array file ({what})", "a .npz archive"))
    return array


class NpzArchive:
    """Read-only view of an `.npz` file whose every read turns damage into a DataError naming file and key."""

    def __init__(self, npz: Any, path: Path, what: str):
        self._npz, self.path, self.what = npz, path, what

    @property
    def files(self) -> list[str]:
        return list(self._npz.files)

    def __contains__(self, key: str) -> bool:
        return key in self._npz.files

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._npz.files:
            raise DataError(describe(f"{self.path} key '{key}'", f"a stored array (keys found: {self.files})",
                                     "missing"))
        try:
            return self._npz[key]
        except ARRAY_READ_ERRORS as err:
            raise DataError(describe(f"{self.path} key '{key}'", f"a complete stored array ({self.what})",
                                     _reason(err))) from None


@contextmanager
def open_npz(path: str | Path, what: str) -> Iterator[NpzArchive]:
    """`with open_npz(path, what) as npz:` an `NpzArchive`; DataError when missing or not a readable .npz."""
    path = Path(path)
    require_file(path, what)
    try:
        npz = np.load(path, allow_pickle=False)
    except ARRAY_READ_ERRORS as err:
        raise DataError(describe(path, f"a complete .npz archive ({what})", _reason(err))) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(describe(path, f"a .npz archive ({what})", "a single .npy array"))
    with npz:
        yield NpzArchive(npz, path, what)


def read_cache(path: str | Path, what: str, shape: tuple[int | None, ...] | None = None,
               note: Callable[[str], None] | None = None) -> np.ndarray | None:
    """A cached array, or None when there is none or it is damaged or of the wrong shape (said through `note`).

    `shape` entries of None are not checked.

    A cache is derived data: a damaged one is discarded (recomputed and rewritten by the caller), never an error.
    """
    path = Path(path)
    if not path.is_file():
        return None
    note = note or (lambda message: print(message, file=sys.stderr))
    try:
        array = load_npy(path, what)
    except DataError as err:
        note(f"note: discarding the cache {err}; recomputing it")
        return None
    if shape is not None and (array.ndim != len(shape)
                              or any(want is not None and got != want for got, want in zip(array.shape, shape))):
        note(f"note: discarding the cache {path}: expected shape {['*' if d is None else d for d in shape]}, found {list(array.shape)}; "
             "recomputing it")
        return None
    return array


def _reason(err: BaseException) -> str:
    """Our own words for a read failure: numpy's messages may suggest allow_pickle=True, which we never do."""
    if isinstance(err, ValueError) and "pickle" in str(err):
        return "not an array file (neither .npy nor .npz; pickled files are not read)"
    return f"{UNREADABLE} [{type(err).__name__}]"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
