"""Read a pickled `.npy` file without letting the pickle run code.

BOLD5000's `img_dict.npy` is a 0-d object array holding a dict
`image name -> uint8 [H, W, 3]`. `np.load(..., allow_pickle=True)` would run any
callable the file names; here the pickle stream is decoded by an unpickler that
admits only the globals numpy itself needs to rebuild arrays and dtypes. Dicts,
lists, tuples, strings and numbers are built by pickle opcodes and need no
global at all. Anything else (e.g. `os.system`) is refused with a `DataError`.
"""
from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import numpy.lib.format as npy_format

from utils.errors import DataError, describe
from utils.io import load_npy

# Module aliases: files written by numpy 1.x name `numpy.core.*`, numpy 2.x `numpy._core.*`.
_NUMPY_CORE_MODULES = ("numpy._core", "numpy.core")
_NUMPY_STRING_KINDS = "US"
_BYTES_ENCODING = "latin1"  # the only encoding protocol-2 pickles use for bytes
_HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}


def _numpy_core(submodule: str):
    for base in _NUMPY_CORE_MODULES:
        try:
            return importlib.import_module(f"{base}.{submodule}")
        except ImportError:
            continue
    raise ImportError(f"numpy core module {submodule!r} not found")


def _string_scalar(dtype: np.dtype, *args: Any) -> Any:
    """`multiarray.scalar`, restricted to numpy string scalars (np.str_ / np.bytes_)."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMPY_STRING_KINDS:
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} is not admitted")
    return _numpy_core("multiarray").scalar(dtype, *args)


def _latin1_encode(text: str, encoding: str = _BYTES_ENCODING) -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it: text -> bytes, latin-1 only."""
    if not isinstance(text, str) or encoding != _BYTES_ENCODING:
        raise pickle.UnpicklingError("_codecs.encode admitted only as str.encode('latin1')")
    return text.encode(_BYTES_ENCODING)


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    multiarray = _numpy_core("multiarray")
    numeric = _numpy_core("numeric")
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for base in _NUMPY_CORE_MODULES:
        allowed[(f"{base}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{base}.numeric", "_frombuffer")] = numeric._frombuffer
        allowed[(f"{base}.multiarray", "scalar")] = _string_scalar
    for name in dir(np.dtypes):
        cls = getattr(np.dtypes, name)
        if isinstance(cls, type) and issubclass(cls, np.dtype):
            allowed[("numpy.dtypes", name)] = cls
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose `find_class` admits only numpy's array/dtype rebuilders."""

    _allowed = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not admitted") from None


def restricted_loads(data: bytes) -> Any:
    """Unpickle `data`, admitting only numpy arrays, dtypes and plain containers."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def load_pickled_npy(path: str | Path) -> Any:
    """Load an object-dtype `.npy` file through `RestrictedUnpickler`.

    Returns the stored object array; a 0-d array (what `np.save(dict)` writes)
    is unwrapped to the object it holds. Raises DataError if the file is
    missing, not a `.npy` file, or its pickle names a global that is not admitted.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(describe(path, "an existing .npy file", "no such file"))
    with open(path, "rb") as f:
        try:
            version = npy_format.read_magic(f)
            read_header = _HEADER_READERS.get(version)
            if read_header is None:
                raise ValueError(f"format version {version}")
            _, _, dtype = read_header(f)
        except (ValueError, EOFError) as err:
            raise DataError(describe(path, "a .npy file (format 1.0 or 2.0)",
                                     f"unreadable header ({err})")) from None
        payload = f.read()
    if not dtype.hasobject:
        return load_npy(path, "an array or a pickled dict of arrays")
    try:
        obj = restricted_loads(payload)
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError) as err:
        raise DataError(describe(path, "a pickle of numpy arrays, dicts and strings only",
                                 f"a pickle that cannot be loaded safely ({err})")) from None
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        obj = obj.item()
    return obj
