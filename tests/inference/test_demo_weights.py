"""Manifests of packaged demo image-side weights: written with sha256 and commands, checked before use."""
import json
import shutil

import pytest

from inference.demo_weights import MANIFEST_NAME, verify_shipped, write_manifest
from utils.errors import CheckpointError


def test_a_changed_file_is_refused(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"weights")
    config = tmp_path / "a.yaml"
    config.write_text("KIND: tokenizer\n")
    write_manifest(tmp_path, {"a.pt": {"command": "python train.py tokenizer", "config": str(config)}}, note="test")
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]["a.pt"]["bytes"] == 7
    assert verify_shipped(tmp_path / "a.pt")
    (tmp_path / "a.pt").write_bytes(b"changed")
    with pytest.raises(CheckpointError, match="sha256"):
        verify_shipped(tmp_path / "a.pt")
    shutil.copyfile(tmp_path / "a.pt", tmp_path / "b.pt")
    assert not verify_shipped(tmp_path / "b.pt")  # not listed: nothing to check
