"""How the entry points end when they do not finish: a clear message, no traceback, nothing mistaken for a result.

`guarded(body, program)` runs `body(folders)` and turns
- an `LEAError` (bad input) or an `OSError` (a file or folder that cannot be read or written,
  a full disk) into `error: ...` on stderr and exit code 2,
- Ctrl-C (KeyboardInterrupt) into a short note and exit code 130,
and in every such case (and on an unexpected failure, which is re-raised) writes `INCOMPLETE.txt`
with the reason into each output folder the body started but did not finish, and says where the
partial results are and how to go on. The body announces its folders with `folders.started(path,
how_to_continue)` and `folders.finished(path)`.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from utils.errors import LEAError, describe
from utils.io import atomic_write_text

INCOMPLETE_NOTE = "INCOMPLETE.txt"
EXIT_OK = 0
EXIT_ERROR = 2          # bad input or a file-system fault, explained on stderr
EXIT_INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C (128 + SIGINT)

# str -> None; how to go on from a folder, computed when the run stops (e.g. whether last.pt exists yet)
ContinueHint = Callable[[], str]


class RunFolders:
    """Output folders a run has started and not yet finished."""

    def __init__(self) -> None:
        self._open: dict[Path, ContinueHint] = {}

    def started(self, folder: str | Path, how_to_continue: str | ContinueHint = "") -> None:
        hint = how_to_continue if callable(how_to_continue) else (lambda: how_to_continue)
        self._open[Path(folder)] = hint

    def finished(self, folder: str | Path) -> None:
        self._open.pop(Path(folder), None)

    def unfinished(self) -> list[tuple[Path, str]]:
        return [(folder, hint()) for folder, hint in self._open.items()]


def mark_incomplete(folder: Path, reason: str, how_to_continue: str) -> str:
    """Write `<folder>/INCOMPLETE.txt`; return a line for the console (also when the note cannot be written)."""
    text = (f"This folder is NOT a finished result.\nstopped: {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
            f"reason: {reason}\n" + (f"to go on: {how_to_continue}\n" if how_to_continue else ""))
    try:
        atomic_write_text(folder / INCOMPLETE_NOTE, text)
        line = f"partial results: {folder} (marked incomplete: {folder / INCOMPLETE_NOTE})"
    except OSError as err:
        line = (f"partial results: {folder} (NOT a finished result; could not write {INCOMPLETE_NOTE} there: "
                f"{getattr(err, 'strerror', None) or err})")
    return line + (f"\n  to go on: {how_to_continue}" if how_to_continue else "")


def file_system_message(err: OSError) -> str:
    """An OSError in our words: the file, what was needed, what happened."""
    where = err.filename or "a file or folder"
    return describe(where, "a location this process can read and write, with free space",
                    err.strerror or type(err).__name__)


def guarded(body: Callable[[RunFolders], object], program: str) -> int:
    """Run `body(folders)`; return its exit code (0 when it returns no int), or 2 / 130 with a message."""
    folders = RunFolders()
    try:
        result = body(folders)
        return result if isinstance(result, int) else EXIT_OK
    except KeyboardInterrupt:
        code, reason, message = EXIT_INTERRUPTED, "interrupted (Ctrl-C)", f"{program}: interrupted (Ctrl-C)"
    except LEAError as err:
        code, reason, message = EXIT_ERROR, f"error: {err}", f"error: {err}"
    except OSError as err:
        text = file_system_message(err)
        code, reason, message = EXIT_ERROR, f"error: {text}", f"error: {text}"
    except BaseException as err:
        for folder, hint in folders.unfinished():
            print(mark_incomplete(folder, f"failed: {type(err).__name__}: {err}", hint), file=sys.stderr)
        raise
    print(message, file=sys.stderr)
    for folder, hint in folders.unfinished():
        print(mark_incomplete(folder, reason, hint), file=sys.stderr)
    return code
