"""The demo's shipped image-side weights: present, small, matching their manifest, loadable."""
import json
import shutil
from pathlib import Path

import pytest

from inference.demo_weights import MANIFEST_NAME, MAX_TOTAL_BYTES, SHIPPED_DIR, read_manifest, verify_shipped, \
    write_manifest
from models.lea import load_trained_network
from utils.config import load_config
from utils.errors import CheckpointError
from utils.io import file_sha256

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / SHIPPED_DIR


def test_shipped_files_match_their_manifest_and_load():
    manifest = read_manifest(SHIPPED)
    assert set(manifest["files"]) == {"tokenizer.pt", "maskgit.pt"}
    total = 0
    for name, record in manifest["files"].items():
        path = SHIPPED / name
        assert file_sha256(path) == record["sha256"] and path.stat().st_size == record["bytes"]
        assert verify_shipped(path)
        assert record["command"].startswith("python train.py ")
        # the committed config is still the one the file was trained from
        assert file_sha256(REPO / record["config"]) == record["config_sha256"], \
            f"{record['config']} changed since {name} was shipped: make demo-train"
        total += record["bytes"]
    assert total == manifest["total_bytes"] <= MAX_TOTAL_BYTES
    tokenizer = load_trained_network("tokenizer", SHIPPED / "tokenizer.pt")
    maskgit = load_trained_network("maskgit", SHIPPED / "maskgit.pt")
    assert maskgit.config.num_codebook == tokenizer.config.num_codebook
    assert maskgit.config.token_grid == tokenizer.config.token_grid
    import torch
    payload = torch.load(SHIPPED / "maskgit.pt", weights_only=True)
    assert payload["tokenizer"]["sha256"] == manifest["files"]["tokenizer.pt"]["sha256"]


def test_demo_configs_use_the_shipped_weights():
    for name in ("LEA_GOD.yaml", "LEA_BOLD.yaml"):
        cfg = load_config(REPO / "configs" / "demo" / name)
        assert Path(cfg.checkpoints.tokenizer) == SHIPPED_DIR / "tokenizer.pt"
        assert Path(cfg.checkpoints.maskgit) == SHIPPED_DIR / "maskgit.pt"


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
