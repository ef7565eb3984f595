"""What every fault case checks: a clear error, no traceback, no unsafe advice, nothing executed or lost."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO

CLI_TIMEOUT_S = 300
# advice this project never gives: turning a safety off
UNSAFE_ADVICE = ("weights_only=False", "`weights_only` set to `False`", "allow_pickle=True")
EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


def assert_clear(message: str, *needles: str) -> None:
    """The message names each needle (file, key, expectation, finding) and suggests no safety switch-off."""
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"
    for advice in UNSAFE_ADVICE:
        assert advice not in message, f"unsafe advice {advice!r} in: {message}"


def run_cli(*args: str, cwd: Path = REPO, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run `python <args>` in the repository; stdout and stderr captured as text."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


def assert_clean_exit(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """Exit `code`, no Python traceback, and a clear message on stderr."""
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert_clear(result.stderr, *needles)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path (to show nothing was changed or lost)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class CreatesFile:
    """Pickled, it asks the unpickler to call open(path, 'w'): a load that runs code leaves the file behind."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))
