"""`--demo`: simulate the demo data and train the small demo weights that are missing.

Everything lives at fixed places so that a second demo run reuses it:

    dataset/simulated/                       python -m datasets.simulate --scale demo
    checkpoints/demo/fmri/<subject>/fmri_autoencoder.pt
    demo_weights/tokenizer.pt
    demo_weights/maskgit.pt                  (paths from the demo LEA config's Checkpoints section;
                                             shipped with the project: a file that a MANIFEST.json
                                             beside it lists is checked against its sha256 first,
                                             and is never retrained, see inference/demo_weights.py)

Each other missing weight is trained by `train.py` into its own time-stamped run folder; its
final file is then linked to the stable path only when nothing is there yet, so
an existing demo weight is never replaced.

The demo networks are small: their matrix products are too short to share between CPU threads,
and a second thread that must wait for a busy core slows every step many times over. The demo
therefore runs torch on one CPU thread unless OMP_NUM_THREADS says otherwise.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from inference.demo_weights import MANIFEST_NAME, REGENERATE_HINT, prepare_data, shipped_but_missing, verify_shipped
from utils.config import REPORTING_KEYS, LEAConfig, apply_overrides, read_yaml, subject_path, to_dict
from utils.errors import CheckpointError, ConfigError, LEAError, describe
from utils.run_files import candidates

DEMO_SIM_ROOT = Path("dataset/simulated")
DEMO_SCALE = "demo"
STAGE_CONFIGS = {"tokenizer": "configs/demo/tokenizer.yaml", "maskgit": "configs/demo/maskgit.yaml"}
FMRI_STAGE_CONFIGS = {"GOD": "configs/demo/fmri_GOD.yaml", "BOLD5000": "configs/demo/fmri_BOLD.yaml"}
FINAL_FILES = {"fmri": "fmri_autoencoder.pt", "tokenizer": "tokenizer.pt", "maskgit": "maskgit.pt"}
DEMO_CPU_THREADS = 1
THREADS_ENV = "OMP_NUM_THREADS"


def set_demo_threads(log: Callable[[str], None]) -> None:
    """One torch CPU thread for the demo, unless OMP_NUM_THREADS is set (then torch follows it)."""
    import torch

    if os.environ.get(THREADS_ENV):
        log(f"demo: {THREADS_ENV}={os.environ[THREADS_ENV]}; torch uses {torch.get_num_threads()} CPU thread(s)")
        return
    torch.set_num_threads(DEMO_CPU_THREADS)
    log(f"demo: torch uses {DEMO_CPU_THREADS} CPU thread (set {THREADS_ENV} to change)")


def place_without_overwrite(source: Path, target: Path) -> bool:
    """Copy `source` to `target` unless `target` exists (checked atomically); True if placed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.link(tmp, target)      # fails when target exists: never replaces a file
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def train_stage(stage: str, config: str, overrides: list[str], log: Callable[[str], None],
                progress: bool = True) -> Path:
    """Run `python train.py <stage> --config <config> --set ... [--no-progress]` in-process; return its
    final file."""
    import train

    if not Path(config).is_file():
        raise ConfigError(describe(config, f"the demo config of the {stage} stage", "no such file"))
    out_dir = Path(apply_overrides(read_yaml(config), overrides).get("Train", {}).get("out_dir", "checkpoints"))
    before = set(out_dir.iterdir()) if out_dir.is_dir() else set()
    command = " ".join(["python train.py", stage, "--config", config, *[f"--set '{o}'" for o in overrides]])
    log(f"demo: training {stage}: {command}")
    argv = [stage, "--config", config] + ([] if progress else ["--no-progress"])
    for item in overrides:
        argv += ["--set", item]
    train.main(argv)
    finals = [d / FINAL_FILES[stage] for d in set(out_dir.iterdir()) - before if (d / FINAL_FILES[stage]).is_file()]
    if len(finals) != 1:
        raise LEAError(describe(f"demo {stage} training ({command})",
                                f"one new run folder under {out_dir} holding {FINAL_FILES[stage]}",
                                [str(f) for f in finals] or "none"))
    return finals[0]


def ensure_weight(stage: str, stable: Path, config: str, overrides: list[str],
                  log: Callable[[str], None], progress: bool = True) -> Path:
    """Train `stage` and place its final file at `stable`, unless `stable` already names a weight file:
    the file itself, or a `train.py` run folder or run name (utils/run_files.py), as every
    checkpoint option accepts. Returns the weight file the demo will use."""
    if stable.is_file():
        shipped = verify_shipped(stable)
        log(f"demo: using {stable}" + (f" (shipped; sha256 matches {stable.parent / MANIFEST_NAME})" if shipped else ""))
        return stable
    if shipped_but_missing(stable):
        raise CheckpointError(describe(stable, f"the shipped demo {stage} weights that {stable.parent / MANIFEST_NAME} "
                                       "lists", f"no such file; restore it (git checkout -- {stable}) or "
                                       f"{REGENERATE_HINT}"))
    found = candidates(stable, FINAL_FILES[stage])
    if found:
        log(f"demo: using {found[0]} (what {stable} names)")
        return found[0]
    if stage in STAGE_CONFIGS:
        prepare_data(log)  # the decoder pool the image side's configs train on (Data.image_folder)
    started = time.time()
    final = train_stage(stage, config, overrides, log, progress)
    placed = place_without_overwrite(final, stable)
    log(f"demo: {stage} trained in {time.time() - started:.0f} s; "
        + (f"placed at {stable}" if placed else f"{stable} appeared meanwhile and was kept; new weights in {final}"))
    return stable


def ensure_data(cfg: LEAConfig, progress: bool, log: Callable[[str], None]) -> None:
    """Simulate the demo data under dataset/simulated when the config's data folder is missing."""
    if Path(cfg.data.path).exists():
        return
    if DEMO_SIM_ROOT.resolve() not in Path(cfg.data.path).resolve().parents:
        raise ConfigError(describe("demo Data.path", f"a folder under {DEMO_SIM_ROOT} (the demo simulates its data)",
                                   cfg.data.path))
    from datasets.simulate import simulate

    started = time.time()
    log(f"demo: simulating the demo data: python -m datasets.simulate --out {DEMO_SIM_ROOT} --scale {DEMO_SCALE}")
    simulate(DEMO_SIM_ROOT, scale=DEMO_SCALE, progress=progress)
    log(f"demo: data written in {time.time() - started:.0f} s")


def check_fmri_features(path: Path, features: dict) -> None:
    """An existing demo fMRI autoencoder must be tied to these features (its file's `features` record):
    one trained for other features, or for an earlier revision of them, is refused, not replaced."""
    from inference.weights import read_weights
    from models.provenance import OK, feature_check

    payload = read_weights(path, "fmri_autoencoder")
    loss = payload.get("config", {}).get("Loss", {})
    if not loss.get("cls_weight") or loss.get("mask_ratio"):
        return                                             # its latent is not tied to any features
    check = feature_check("features", f"demo fMRI autoencoder {path} vs the demo's Features", payload.get("features"),
                          features, "move the old demo weights aside", require_record=True)
    if check.status != OK:
        found = check.recorded or "no feature record (trained before feature revisions)"
        raise CheckpointError(describe(path, f"the demo fMRI autoencoder tied to the demo's features {check.given}",
                                       f"{found}; the demo never replaces a weight: move the old demo weights "
                                       f"aside (mv checkpoints/demo checkpoints/demo_old) and run the demo again"))


def config_drift(path: Path, stage_config: str, overrides: list[str]) -> list[str]:
    """'Key: trained with X, the demo config now says Y' for each setting that `stage_config` (with
    `overrides`) spells out and that the weight file at `path` was trained with otherwise (none for a
    file without a training config, such as a release file)."""
    from inference.weights import read_weights
    from training.engine import flatten_config

    payload = read_weights(path, "fmri_autoencoder")
    if not isinstance(payload, dict) or not isinstance(payload.get("config"), dict):
        return []
    trained = flatten_config(payload["config"])
    wanted = flatten_config(apply_overrides(read_yaml(stage_config), overrides))
    return [f"{key}: trained with {trained.get(key)!r}, {stage_config} now says {value!r}"
            for key, value in wanted.items() if key not in REPORTING_KEYS and trained.get(key) != value]


def prepare_demo(cfg: LEAConfig, spec, progress: bool = True, log: Callable[[str], None] = print) -> None:
    """Make sure the demo data and every demo weight the config names exist."""
    set_demo_threads(log)
    ensure_data(cfg, progress, log)
    fmri_config = FMRI_STAGE_CONFIGS[cfg.data.dataset]
    for subject in cfg.data.subjects:
        fmri = Path(subject_path(cfg.checkpoints.fmri, "Checkpoints.fmri", subject))
        overrides = [f"Data.subjects=[{subject}]", f"Data.path={cfg.data.path}"]
        used = ensure_weight("fmri", fmri, fmri_config, overrides, log, progress)
        check_fmri_features(used, to_dict(cfg.features))
        drift = config_drift(used, fmri_config, overrides)
        if drift:
            log(f"demo: note: {used} was trained with other settings than the demo's ({'; '.join(drift)}), so "
                "this run's numbers will differ from the README's; the demo never replaces a weight: move "
                "the old demo weights aside (mv checkpoints/demo checkpoints/demo_old) to train it anew")
    tokenizer = ensure_weight("tokenizer", Path(cfg.checkpoints.tokenizer), STAGE_CONFIGS["tokenizer"], [], log,
                              progress)
    ensure_weight("maskgit", Path(cfg.checkpoints.maskgit), STAGE_CONFIGS["maskgit"],
                  [f"Init.tokenizer={tokenizer}"], log, progress)
