"""The demo's shipped image-side weights (tokenizer and MaskGIT): manifest, check, shipping, regeneration.

The demo image side learns too slowly for `make demo`'s 5 minutes on a 2-core CPU, so the project
ships the two files `train.py` produced from the committed demo configs, with a manifest:

    demo_weights/tokenizer.pt     python train.py tokenizer --config configs/demo/tokenizer.yaml
    demo_weights/maskgit.pt       python train.py maskgit --config configs/demo/maskgit.yaml \
                                      --set Init.tokenizer=demo_weights/tokenizer.pt
                                  (both on dataset/simulated_pool: python -m datasets.decoder_pool)
    demo_weights/MANIFEST.json    per file: sha256, bytes, the exact command, its config and that
                                  config's sha256, the run, its training time and the data command

The demo LEA configs' Checkpoints name them. Before the demo uses a weight file that a manifest in
its folder lists, its sha256 is checked (`verify_shipped`); a listed file that is missing is an
error, not a silent retraining. The fMRI autoencoder and the alignment heads are always trained by
the demo.

`make demo-train` (`python -m inference.demo_weights`) trains both from scratch with the committed
configs into a new folder `checkpoints/demo/image_side_<date-time>/` with its manifest (nothing
existing is replaced; about an hour and a half on one CPU thread; trained the same way: a retrained
tokenizer's weight tensors equalled the shipped ones on this project's machine, its file's sha256 not, as
each file records the folder it was trained into).
`python -m inference.demo_weights --ship TOKENIZER_RUN MASKGIT_RUN` copies two runs into
demo_weights/ after checking that each was trained with its committed config (`ship`);
`--ship-maskgit MASKGIT_RUN` ships a MaskGIT trained on the shipped tokenizer, which stays.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

from utils.config import REPORTING_KEYS
from utils.errors import CheckpointError, describe
from utils.io import atomic_write_text, file_sha256, new_run_dir

SHIPPED_DIR = Path("demo_weights")  # the shipped files and their manifest
MANIFEST_NAME = "MANIFEST.json"
MAX_TOTAL_BYTES = 20 * 1024 * 1024  # the shipped image-side weights stay under 20 MB
RETRAIN_ROOT = Path("checkpoints/demo")
RETRAIN_NAME = "image_side"
STAGES = (("tokenizer", "configs/demo/tokenizer.yaml", "tokenizer.pt"),
          ("maskgit", "configs/demo/maskgit.yaml", "maskgit.pt"))
SIMULATE_COMMAND = "python -m datasets.simulate --out dataset/simulated --scale demo (seed 0)"
REGENERATE_HINT = "make demo-train (python -m inference.demo_weights) regenerates them"


def train_command(stage: str, config: str, overrides: list[str]) -> str:
    """The `train.py` command line a manifest records for a stage."""
    return " ".join(["python train.py", stage, "--config", config, *[f"--set {o}" for o in overrides]])


def pool_folder(stage: str) -> Path | None:
    """The decoder pool a stage's committed config trains on (Data.image_folder), or None."""
    from utils.config import read_yaml

    config = {name: path for name, path, _ in STAGES}[stage]
    folder = read_yaml(config)["Data"].get("image_folder")
    return Path(folder) if folder else None


def stage_data_command(stage: str) -> str:
    """How a stage's training images were made, for the manifest."""
    pool = pool_folder(stage)
    if pool is None:
        return SIMULATE_COMMAND
    return f"{SIMULATE_COMMAND}; python -m datasets.decoder_pool --data dataset/simulated --out {pool}"


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


def shipped_but_missing(path: str | Path) -> bool:
    """True when a manifest beside `path` lists it but the file itself is not there."""
    path = Path(path)
    if path.is_file() or not (path.parent / MANIFEST_NAME).is_file():
        return False
    return path.name in read_manifest(path.parent)["files"]


MANIFEST_COMPUTED = ("sha256", "bytes", "command", "config", "config_sha256")  # what write_manifest fills in


def write_manifest(folder: Path, files: dict[str, dict], note: str) -> Path:
    """Manifest of the weight files in `folder`: {name: {'command', 'config', ...}} plus sha256 and bytes."""
    records = {}
    for name, info in files.items():
        path = folder / name
        config = info["config"]
        computed = (file_sha256(path), path.stat().st_size, info["command"], config, file_sha256(config))
        records[name] = {**dict(zip(MANIFEST_COMPUTED, computed)), **info.get("extra", {})}
    manifest = {"files": records, "total_bytes": sum(r["bytes"] for r in records.values()),
                "max_total_bytes": MAX_TOTAL_BYTES, "note": note, "regenerate": REGENERATE_HINT,
                "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                "written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    return atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")


def prepare_data(log: Callable[[str], None] = print) -> None:
    """The images the image side trains on, made when missing: the simulated demo data and the decoder
    pool of attribute combinations no stimulus uses (tokenizer and MaskGIT)."""
    from datasets.decoder_pool import write_pool
    from datasets.simulate import GROUND_TRUTH_DIR, simulate
    from inference.demo import DEMO_SCALE, DEMO_SIM_ROOT

    if not (DEMO_SIM_ROOT / GROUND_TRUTH_DIR).is_dir():
        log(f"demo weights: simulating the demo data ({SIMULATE_COMMAND})")
        simulate(DEMO_SIM_ROOT, scale=DEMO_SCALE)
    for pool in sorted({pool_folder(stage) for stage, _, _ in STAGES} - {None}):
        if not pool.is_dir():
            log(f"demo weights: rendering the decoder pool into {pool}")
            write_pool(DEMO_SIM_ROOT, pool)


def retrain(out_root: Path = RETRAIN_ROOT, log: Callable[[str], None] = print) -> Path:
    """Train the tokenizer, then MaskGIT on its tokens, from the committed demo configs; copy both final
    files into a new folder under `out_root` with their manifest; return that folder. Torch runs on one
    CPU thread unless OMP_NUM_THREADS says otherwise, as the shipped files were trained."""
    from inference.demo import set_demo_threads, train_stage

    set_demo_threads(log)
    prepare_data(log)
    finals, files = {}, {}
    for stage, config, name in STAGES:
        overrides = [f"Init.tokenizer={finals['tokenizer']}"] if stage == "maskgit" else []
        started = time.time()
        finals[stage] = train_stage(stage, config, overrides, log)
        files[name] = {"command": train_command(stage, config, overrides), "config": config,
                       "extra": {"trained_seconds": round(time.time() - started), "run": str(finals[stage].parent),
                                 "data": stage_data_command(stage)}}
    folder = new_run_dir(out_root, RETRAIN_NAME)
    for stage, _, name in STAGES:
        shutil.copyfile(finals[stage], folder / name)
    write_manifest(folder, files, note="regenerated by make demo-train")
    return folder


# keys a shipped run may differ in from its committed config: where and how it reported, and (MaskGIT)
# which copy of the tokenizer it read
RUN_ONLY_KEYS = {"tokenizer": set(REPORTING_KEYS), "maskgit": {*REPORTING_KEYS, "Init.tokenizer"}}


def check_run_matches_config(run: Path, stage: str, config: str) -> None:
    """The run's resolved config.yaml must equal the committed config resolved (but for RUN_ONLY_KEYS)."""
    import models  # noqa: F401  (registers the Model schemas)
    from training.engine import flatten_config
    from utils.config import config_from_dict, read_yaml, to_dict

    ran = flatten_config(read_yaml(run / "config.yaml"))
    committed = flatten_config(to_dict(config_from_dict(read_yaml(config), config, kind=stage)))
    differ = sorted(k for k in set(ran) | set(committed)
                    if k not in RUN_ONLY_KEYS[stage] and ran.get(k) != committed.get(k))
    if differ:
        raise CheckpointError(describe(f"{run / 'config.yaml'}", f"the settings of {config}",
                                       {k: (ran.get(k), committed.get(k)) for k in differ[:8]}))


def kept_record(dest: Path, name: str, config: str) -> dict:
    """The manifest entry of a shipped file that a partial `ship` keeps: the file must match the manifest
    and its config must still be the committed one."""
    path = dest / name
    if not path.is_file() or not verify_shipped(path):
        raise CheckpointError(describe(path, f"a shipped file listed in {dest / MANIFEST_NAME} (kept as it is)",
                                       "no such file" if not path.is_file() else "a file the manifest does not list"))
    record = read_manifest(dest)["files"][name]
    if file_sha256(config) != record["config_sha256"]:
        raise CheckpointError(describe(f"{dest / MANIFEST_NAME} files.{name}.config_sha256",
                                       f"the sha256 of {config} as committed now ({file_sha256(config)})",
                                       f"{record['config_sha256']}: the config changed since {name} was trained; "
                                       "retrain and ship it too"))
    return {"command": record["command"], "config": record["config"],
            "extra": {k: v for k, v in record.items() if k not in MANIFEST_COMPUTED}}


def check_decoder_tokenizer(maskgit_file: Path, tokenizer_file: Path) -> None:
    """The MaskGIT file must record the sha256 of the tokenizer shipped beside it (it learned those tokens)."""
    from models.checkpoints import safe_torch_load

    recorded = (safe_torch_load(maskgit_file).get("tokenizer") or {}).get("sha256")
    found = file_sha256(tokenizer_file)
    if recorded != found:
        raise CheckpointError(describe(f"{maskgit_file} key 'tokenizer'.sha256", f"{found} ({tokenizer_file})",
                                       recorded))


def logged_seconds(run: Path) -> dict:
    """The training time a run folder's log.csv records. A resumed run's folder logs only the steps it
    trained itself, so its first logged step is named beside the time (`logged_from_step`); its time
    goes on from the checkpoint's (but counts from the resume for checkpoints that record none)."""
    from training.logger import read_log
    from utils.config import read_yaml

    rows = read_log(run)
    if not rows:
        return {"trained_seconds": None}
    record = {"trained_seconds": rows[-1].get("time_s")}
    if int(rows[0]["step"]) > int(read_yaml(run / "config.yaml")["Train"]["log_interval"]):
        record["logged_from_step"] = int(rows[0]["step"])
    return record


def ship(runs: dict[str, Path], dest: Path = SHIPPED_DIR, data_command: str | None = None,
         note: str | None = None) -> Path:
    """Copy the final files of the `train.py` runs {stage: run folder} into `dest` with their manifest.
    Each run must have been trained from the committed config (check_run_matches_config); a stage left
    out of `runs` keeps its shipped file and manifest entry (`kept_record`), e.g. MaskGIT re-shipped
    over the shipped tokenizer. Nothing in `dest` is replaced (a file already there must be a copy of
    the run's: MaskGIT may have been trained on the tokenizer's copy in `dest`); the MaskGIT must
    record the tokenizer shipped beside it; the total stays under MAX_TOTAL_BYTES. `note` is added to
    the manifest's note (how the runs were made, where that is more than the commands say)."""
    if not runs or set(runs) - {stage for stage, _, _ in STAGES}:
        raise CheckpointError(describe("runs to ship", f"one or more of {[stage for stage, _, _ in STAGES]}",
                                       sorted(runs)))
    finals = {stage: Path(runs[stage]) / name if stage in runs else dest / name for stage, _, name in STAGES}
    files = {}
    for stage, config, name in STAGES:
        if stage not in runs:
            files[name] = kept_record(dest, name, config)
            continue
        if not finals[stage].is_file():
            raise CheckpointError(describe(finals[stage], f"the final {name} of a {stage} run", "no such file"))
        check_run_matches_config(Path(runs[stage]), stage, config)
        if (dest / name).exists() and file_sha256(dest / name) != file_sha256(finals[stage]):
            raise CheckpointError(describe(dest / name, "no file, or a copy of the run's (shipped weights are never "
                                           "replaced in place)", "another file; remove the shipped files first (git rm)"))
    check_decoder_tokenizer(finals["maskgit"], finals["tokenizer"])
    total = sum(f.stat().st_size for f in finals.values())
    if total > MAX_TOTAL_BYTES:
        raise CheckpointError(describe("demo image-side weights", f"at most {MAX_TOTAL_BYTES} bytes in all", total))
    dest.mkdir(parents=True, exist_ok=True)
    for stage, config, name in STAGES:
        if stage not in runs:
            continue
        if not (dest / name).exists():
            shutil.copyfile(finals[stage], dest / name)
        overrides = [f"Init.tokenizer={dest / 'tokenizer.pt'}"] if stage == "maskgit" else []
        files[name] = {"command": train_command(stage, config, overrides), "config": config,
                       "extra": {"run": Path(runs[stage]).name, **logged_seconds(Path(runs[stage])),
                                 "data": data_command or stage_data_command(stage)}}
    shipped_note = "trained by train.py from the committed demo configs, one CPU thread"
    write_manifest(dest, files, note=f"{shipped_note}. {note}" if note else shipped_note)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Regenerate the demo's image-side weights (tokenizer, MaskGIT) "
                                            "from the committed demo configs")
    p.add_argument("--out", default=str(RETRAIN_ROOT), help="the new folder is made under this one")
    shipping = p.add_mutually_exclusive_group()
    shipping.add_argument("--ship", nargs=2, metavar=("TOKENIZER_RUN", "MASKGIT_RUN"),
                          help=f"instead of training: copy these two train.py runs' final files into {SHIPPED_DIR}/ "
                               "with a manifest (each run must match its committed config)")
    shipping.add_argument("--ship-maskgit", metavar="MASKGIT_RUN",
                          help=f"like --ship for MaskGIT alone, trained on the shipped {SHIPPED_DIR}/tokenizer.pt, "
                               "which stays as its manifest lists it")
    p.add_argument("--note", default=None,
                   help="with --ship/--ship-maskgit: added to the manifest's note (e.g. that a run was resumed)")
    p.add_argument("--data-command", default=None,
                   help="how the training images were made, for the manifest (default: the demo's commands)")
    args = p.parse_args(argv)
    if args.ship or args.ship_maskgit:
        runs = (dict(zip(("tokenizer", "maskgit"), map(Path, args.ship))) if args.ship
                else {"maskgit": Path(args.ship_maskgit)})
        folder = ship(runs, data_command=args.data_command, note=args.note)
        print(f"demo weights: shipped into {folder} ({MANIFEST_NAME} lists the files and commands)")
        return 0
    folder = retrain(Path(args.out))
    print(f"demo weights: wrote {folder} ({MANIFEST_NAME} lists the files and commands).\n"
          f"Use them: python LEA_GOD.py --demo --tokenizer-ckpt {folder / 'tokenizer.pt'} "
          f"--maskgit-ckpt {folder / 'maskgit.pt'}\n"
          f"Ship them: git rm {SHIPPED_DIR}/*, then python -m inference.demo_weights --ship "
          f"{' '.join(read_manifest(folder)['files'][name]['run'] for _, _, name in STAGES)}")
    return 0


if __name__ == "__main__":
    from utils.guard import guarded

    raise SystemExit(guarded(lambda folders: main(), "python -m inference.demo_weights"))
