"""A train.py run folder, a folder of runs or a run-name prefix wherever a weight file is accepted."""
import os
from pathlib import Path

from utils.run_files import candidates, resolve

FINAL = "maskgit.pt"


def run(root: Path, name: str, mtime: int) -> Path:
    final = root / name / FINAL
    final.parent.mkdir(parents=True)
    final.write_bytes(b"x")
    os.utime(final, (mtime, mtime))
    return final


def test_file_run_folder_folder_of_runs_and_prefix(tmp_path):
    old = run(tmp_path / "maskgit", "MaskGIT_GOD_20260101-000000", 1_000)
    new = run(tmp_path / "maskgit", "MaskGIT_GOD_20260102-000000", 2_000)
    bold = run(tmp_path / "maskgit", "MaskGIT_BOLD_20260103-000000", 3_000)
    assert resolve(old, FINAL) == old                                     # 1. the file
    assert resolve(old.parent, FINAL) == old                              # 2. its run folder
    assert candidates(tmp_path / "maskgit", FINAL) == [bold, new, old]    # 3. folder of runs, newest first
    assert resolve(tmp_path / "maskgit" / "MaskGIT_GOD", FINAL) == new    # 4. run-name prefix
    assert resolve(tmp_path / "maskgit" / FINAL, FINAL) == bold           # 5. missing <folder>/<final name>
    missing = tmp_path / "nowhere" / FINAL
    assert resolve(missing, FINAL) == missing and candidates(missing, FINAL) == []
    assert candidates(tmp_path / "maskgit" / "MaskGIT", FINAL) == []    # a run name, not any prefix
