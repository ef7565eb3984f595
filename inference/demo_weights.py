"""Packaged demo image-side weights (tokenizer and MaskGIT): manifest, check, regeneration.

The route for a demo whose image side cannot learn within `make demo`'s 5 minutes on a 2-core CPU:
ship the two files `train.py` produced from the committed demo configs together with a manifest,

    <folder>/tokenizer.pt     python train.py tokenizer --config configs/demo/tokenizer.yaml
    <folder>/maskgit.pt       python train.py maskgit --config configs/demo/maskgit.yaml \
                                  --set Init.tokenizer=<that run>/tokenizer.pt
    <folder>/MANIFEST.json    per file: sha256, bytes, the exact command, its config and the
                              config's sha256

and point the demo LEA configs' Checkpoints at them. Before the demo uses a weight file that a
manifest in its folder lists, its sha256 is checked (`verify_shipped`). The fMRI autoencoder and the
alignment heads are always trained by the demo.

No image-side weights are shipped yet (the demo trains its own, see README): `make demo-train`
(`python -m inference.demo_weights`) trains both from scratch into a new folder
`checkpoints/demo/image_side_<date-time>/` with its manifest (nothing existing is replaced).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

from utils.errors import CheckpointError, describe
from utils.io import atomic_write_text, file_sha256, new_run_dir

SHIPPED_DIR = Path("demo_weights")  # where shipped files would go (none are shipped yet)
MANIFEST_NAME = "MANIFEST.json"
MAX_TOTAL_BYTES = 20 * 1024 * 1024  # the shipped image-side weights stay under 20 MB
RETRAIN_ROOT = Path("checkpoints/demo")
RETRAIN_NAME = "image_side"
STAGES = (("tokenizer", "configs/demo/tokenizer.yaml", "tokenizer.pt"),
          ("maskgit", "configs/demo/maskgit.yaml", "maskgit.pt"))
REGENERATE_HINT = "make demo-train (python -m inference.demo_weights) regenerates them"


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(describe(path, "the manifest of the shipped demo weights", "no such file"))
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(describe(path, "a JSON manifest", f"invalid JSON ({err})")) from err
    if not isinstance(manifest.get("files"), dict):
        raise CheckpointError(describe(f"{path} key 'files'", "a mapping file name -> record", manifest.get("files")))
    return manifest


def verify_shipped(path: str | Path) -> bool:
    """If `path` lies in a folder with a manifest that lists it, check its sha256 (CheckpointError on a
    mismatch) and return True; False when no manifest covers it."""
    path = Path(path)
    if not (path.parent / MANIFEST_NAME).is_file():
        return False
    record = read_manifest(path.parent)["files"].get(path.name)
    if record is None:
        return False
    found = file_sha256(path)
    if found != record["sha256"]:
        raise CheckpointError(describe(f"{path} (sha256)", f"{record['sha256']} from {path.parent / MANIFEST_NAME}",
                                       f"{found}; the file was changed or damaged: {REGENERATE_HINT}"))
    return True


def write_manifest(folder: Path, files: dict[str, dict], note: str) -> Path:
    """Manifest of the weight files in `folder`: {name: {'command', 'config', ...}} plus sha256 and bytes."""
    records = {}
    for name, info in files.items():
        path = folder / name
        config = info["config"]
        records[name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size, "command": info["command"],
                         "config": config, "config_sha256": file_sha256(config), **info.get("extra", {})}
    manifest = {"files": records, "total_bytes": sum(r["bytes"] for r in records.values()),
                "max_total_bytes": MAX_TOTAL_BYTES, "note": note, "regenerate": REGENERATE_HINT,
                "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                "written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    return atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")


def retrain(out_root: Path = RETRAIN_ROOT, log: Callable[[str], None] = print) -> Path:
    """Train the tokenizer, then MaskGIT on its tokens, from the committed demo configs; copy both final
    files into a new folder under `out_root` with their manifest; return that folder."""
    from inference.demo import train_stage

    finals, files = {}, {}
    for stage, config, name in STAGES:
        overrides = [f"Init.tokenizer={finals['tokenizer']}"] if stage == "maskgit" else []
        started = time.time()
        finals[stage] = train_stage(stage, config, overrides, log)
        command = " ".join(["python train.py", stage, "--config", config, *[f"--set {o}" for o in overrides]])
        files[name] = {"command": command, "config": config,
                       "extra": {"trained_seconds": round(time.time() - started), "run": str(finals[stage].parent)}}
    folder = new_run_dir(out_root, RETRAIN_NAME)
    for stage, _, name in STAGES:
        shutil.copyfile(finals[stage], folder / name)
    write_manifest(folder, files, note="regenerated by make demo-train")
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Regenerate the demo's image-side weights (tokenizer, MaskGIT) "
                                            "from the committed demo configs")
    p.add_argument("--out", default=str(RETRAIN_ROOT), help="the new folder is made under this one")
    args = p.parse_args(argv)
    folder = retrain(Path(args.out))
    print(f"demo weights: wrote {folder} ({MANIFEST_NAME} lists the files and commands).\n"
          f"Use them: python LEA_GOD.py --demo --tokenizer-ckpt {folder / 'tokenizer.pt'} "
          f"--maskgit-ckpt {folder / 'maskgit.pt'}\n"
          f"Ship them: copy the three files over {SHIPPED_DIR}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
