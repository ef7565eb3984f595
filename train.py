"""Train one LEA stage.

    python train.py {fmri,tokenizer,maskgit,align} --config FILE [--set Section.key=value ...]
                    [--resume RUN_DIR_or_CKPT] [--run-name NAME] [--mask-ratio R]
                    [--device auto|cpu|cuda] [--no-progress]
    torchrun --nproc_per_node N train.py ...      # DistributedDataParallel, one process per GPU

Each run writes into a new folder `<Train.out_dir>/<run-name>_<timestamp>/` (align: under
`<Checkpoints.align's folder>`): log.csv, last.pt and step_XXXXXX.pt checkpoints, samples/, the
resolved config.yaml and the final model-only file that inference loads
(fmri_autoencoder.pt, tokenizer.pt, maskgit.pt, align.pt); a run ends by printing the option
that uses it (the LEA scripts and the next stage accept the run folder itself).
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path
from typing import Callable

from training.distributed import DEVICE_CHOICES, cleanup_distributed, init_distributed
from training.engine import LAST_CHECKPOINT, Trainer, load_checkpoint, start_run_dir
from utils.config import apply_overrides, config_from_dict, read_yaml, save_config
from utils.errors import ConfigError
from utils.guard import RunFolders, guarded
from utils.io import atomic_write_text, ensure_output_dir, progress_wanted

STAGE_MODULES = {"fmri": "training.stage_fmri", "tokenizer": "training.stage_tokenizer",
                 "maskgit": "training.stage_maskgit", "align": "training.stage_align"}
# How a finished run is used next: the option of the LEA scripts (and of the next stage) that takes it.
NEXT_USE = {"fmri": ["python LEA_GOD.py / LEA_BOLD.py --fmri-ckpt {run}", "python train.py align ... "
                     "--set Checkpoints.fmri={run}"],
            "tokenizer": ["python train.py maskgit ... --set Init.tokenizer={run}",
                          "python LEA_GOD.py / LEA_BOLD.py --tokenizer-ckpt {run}"],
            "maskgit": ["python LEA_GOD.py / LEA_BOLD.py --maskgit-ckpt {run}", "config line  Checkpoints: "
                        "{{maskgit: {run}}}"],
            "align": ["python LEA_GOD.py / LEA_BOLD.py --subject {subject} --align {run}"]}


def print_next_use(stage: str, run_dir, log, subject: str = "<subject>") -> None:
    """The exact option that uses the run just finished."""
    log(f"{stage}: use this run with")
    for line in NEXT_USE[stage]:
        log("  " + line.format(run=run_dir, subject=subject))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=sorted(STAGE_MODULES))
    p.add_argument("--config", required=True, help="stage YAML (configs/*.yaml or configs/demo/*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set Train.max_steps=200 (repeatable)")
    p.add_argument("--resume", help="run folder (its last.pt) or checkpoint file to continue from")
    p.add_argument("--run-name", help="run folder prefix (default: the config's NAME)")
    p.add_argument("--mask-ratio", type=float,
                   help="fmri only: masked-brain-modelling pretraining with this patch mask ratio")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (also off when stdout or stderr is not a terminal); log.csv is unchanged")
    return p.parse_args(argv)


def without_resume(argv: list[str]) -> list[str]:
    """The command-line arguments less any --resume and its value."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg == "--resume" or arg.startswith("--resume="):
            skip = arg == "--resume"
            continue
        kept.append(arg)
    return kept


def continue_hint(argv: list[str], run_dir: Path) -> Callable[[], str]:
    """How to go on from an unfinished run folder: resume from its last.pt, or start again when there is none."""
    def hint() -> str:
        if (run_dir / LAST_CHECKPOINT).is_file():
            return "python " + shlex.join(["train.py", *without_resume(argv), "--resume", str(run_dir)])
        return f"no checkpoint was saved yet in {run_dir}; run the command again"
    return hint


def main(argv: list[str] | None = None, folders: RunFolders | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    folders = folders or RunFolders()
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.mask_ratio is not None:
        if args.stage != "fmri":
            raise ConfigError(f"--mask-ratio: only for the fmri stage, not '{args.stage}'")
        overrides.append(f"Loss.mask_ratio={args.mask_ratio}")
    progress = progress_wanted(not args.no_progress)
    if not progress and args.stage != "align":
        overrides.append("Train.progress=false")
    values = apply_overrides(read_yaml(args.config), overrides)
    checked = config_from_dict(values, args.config)   # every key and type checked before any data is read
    if hasattr(checked, "train"):
        ensure_output_dir(checked.train.out_dir)       # a folder that cannot be written fails before any work
    stage_module = importlib.import_module(STAGE_MODULES[args.stage])
    info = init_distributed(args.device)
    log = print if info.is_main else (lambda _msg: None)
    try:
        if args.stage == "align":
            for run_dir in stage_module.run_align(values, args.config, info, args.run_name, log, progress):
                print_next_use("align", run_dir, log, subject=run_dir.parent.name)
            return 0
        resume = load_checkpoint(args.resume) if args.resume else None
        stages = list(stage_module.stage_builders(values, args.config))
        if resume is not None and len(stages) != 1:
            raise ConfigError(f"--resume: continues one run, but {args.config} trains {len(stages)} "
                              "(one per subject); restrict Data.subjects to the resumed one")
        for build in stages:
            stage = build(log)
            run_dir = start_run_dir(stage.config.train.out_dir, args.run_name or stage.run_name, info)
            if info.is_main:
                folders.started(run_dir, continue_hint(argv, run_dir))
            trainer = Trainer(stage, run_dir, info, resume=resume)
            if info.is_main:
                save_config(stage.config, run_dir / "config.yaml")
                for name, text in getattr(stage, "run_files", {}).items():
                    atomic_write_text(run_dir / name, text)
                log(f"{args.stage}: run folder {run_dir}" + (f" (resuming {resume['path']})" if resume else ""))
            trainer.fit()
            folders.finished(run_dir)
            print_next_use(args.stage, run_dir, log)
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(guarded(lambda folders: main(sys.argv[1:], folders), "train.py"))
