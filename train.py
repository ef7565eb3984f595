"""Train one LEA stage.

    python train.py {fmri,tokenizer,maskgit,align} --config FILE [--set Section.key=value ...]
                    [--resume RUN_DIR_or_CKPT] [--run-name NAME] [--mask-ratio R]
                    [--device auto|cpu|cuda] [--no-progress]
    torchrun --nproc_per_node N train.py ...      # DistributedDataParallel, one process per GPU

Each run writes into a new folder `<Train.out_dir>/<run-name>_<timestamp>/` (align: under
`<Checkpoints.align's folder>`): log.csv, last.pt and step_XXXXXX.pt checkpoints, samples/, the
resolved config.yaml and the final model-only file that inference loads
(fmri_autoencoder.pt, tokenizer.pt, maskgit.pt, align.pt).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from training.distributed import DEVICE_CHOICES, cleanup_distributed, init_distributed
from training.engine import Trainer, load_checkpoint, start_run_dir
from utils.config import apply_overrides, read_yaml, save_config
from utils.errors import ConfigError, LEAError
from utils.io import progress_wanted

STAGE_MODULES = {"fmri": "training.stage_fmri", "tokenizer": "training.stage_tokenizer",
                 "maskgit": "training.stage_maskgit", "align": "training.stage_align"}


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


def main(argv: list[str] | None = None) -> int:
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
    stage_module = importlib.import_module(STAGE_MODULES[args.stage])
    info = init_distributed(args.device)
    log = print if info.is_main else (lambda _msg: None)
    try:
        if args.stage == "align":
            stage_module.run_align(values, args.config, info, args.run_name, log, progress)
            return 0
        resume = load_checkpoint(args.resume) if args.resume else None
        stages = list(stage_module.stage_builders(values, args.config))
        if resume is not None and len(stages) != 1:
            raise ConfigError(f"--resume: continues one run, but {args.config} trains {len(stages)} "
                              "(one per subject); restrict Data.subjects to the resumed one")
        for build in stages:
            stage = build(log)
            run_dir = start_run_dir(stage.config.train.out_dir, args.run_name or stage.run_name, info)
            trainer = Trainer(stage, run_dir, info, resume=resume)
            if info.is_main:
                save_config(stage.config, run_dir / "config.yaml")
                log(f"{args.stage}: run folder {run_dir}" + (f" (resuming {resume['path']})" if resume else ""))
            trainer.fit()
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LEAError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
