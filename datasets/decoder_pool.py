"""Decoder-training images from the simulator's world that show no stimulus category.

The paper's MaskGIT learns to draw from ImageNet before it ever meets a stimulus. The simulated
analogue: images rendered by the simulator (same renderer, same jitter) for every combination of
attributes (shape, palette, stripe orientation and frequency, layout) that *no* category of a
simulated dataset uses, neither a training nor a test category of GOD or BOLD5000. A decoder trained
on them has seen every shape under many colours and places, and none of the stimulus categories, so
drawing a test category is generalisation, not recall.

    python -m datasets.decoder_pool --data dataset/simulated --out dataset/simulated_pool

writes `<combination name>_<k>.png` (PER_COMBINATION renders each, at the dataset's image size) and
`pool.json` (the dataset it excludes, by its categories.json sha256, the counts and the command).
Feed the folder to the tokenizer or MaskGIT stage with `Data.image_folder`. An existing folder is
never written into.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.simulate import (ATTRIBUTE_SIZES, CATEGORY_ATTRIBUTES, GROUND_TRUTH_DIR, LAYOUTS, MANIFEST_FILE,
                               ORIENTATIONS_DEG, PALETTES, SHAPES, STRIPE_CYCLES, render_image)
from utils.errors import DataError, describe
from utils.io import file_sha256, progress_wanted, staged_folder
from utils.guard import RunFolders, guarded

PER_COMBINATION = 4          # renders of each unused attribute combination
POOL_SEED = 7                # the renders' random stream (jitter), independent of the dataset's
POOL_FILE = "pool.json"


def combination_name(combo: tuple[int, ...]) -> str:
    shape, palette, orientation, frequency, layout = combo
    return (f"{SHAPES[shape]}_{list(PALETTES)[palette]}_{ORIENTATIONS_DEG[orientation]:g}deg_"
            f"{STRIPE_CYCLES[frequency]:g}cyc_{list(LAYOUTS)[layout]}")


def parse_combination_name(name: str) -> tuple[int, ...]:
    """The attribute indices (CATEGORY_ATTRIBUTES order) of a `combination_name`; DataError otherwise."""
    parts = name.split("_")
    try:
        if len(parts) != len(CATEGORY_ATTRIBUTES) or not (parts[2].endswith("deg") and parts[3].endswith("cyc")):
            raise ValueError(name)
        combo = (SHAPES.index(parts[0]), list(PALETTES).index(parts[1]),
                 ORIENTATIONS_DEG.index(float(parts[2][:-3])), STRIPE_CYCLES.index(float(parts[3][:-3])),
                 list(LAYOUTS).index(parts[4]))
    except ValueError:
        raise DataError(describe(f"decoder-pool image name {name!r}",
                                 "shape_palette_<deg>deg_<cycles>cyc_layout (combination_name)", "another name")) from None
    return combo


def pool_attributes(files: list[Path]) -> np.ndarray:
    """Attributes int [N, A] of pool images `<combination name>_<k>.png` (CATEGORY_ATTRIBUTES order)."""
    return np.array([parse_combination_name(f.stem.rsplit("_", 1)[0]) for f in files], dtype=np.int64)


def unused_combinations(categories: list[dict]) -> list[tuple[int, ...]]:
    """Every attribute combination that none of `categories` (categories.json entries) uses, in order."""
    used = {tuple(int(c[a]) for a in CATEGORY_ATTRIBUTES) for c in categories}
    return [c for c in itertools.product(*(range(n) for n in ATTRIBUTE_SIZES)) if c not in used]


def read_ground_truth(data: Path) -> tuple[Path, list[dict], int]:
    """categories.json path, its entries and the image size of the simulated dataset under `data`."""
    gt = data / GROUND_TRUTH_DIR
    paths = gt / "categories.json", gt / MANIFEST_FILE
    for path in paths:
        if not path.is_file():
            raise DataError(describe(path, "the simulator's ground truth (python -m datasets.simulate)", "no such file"))
    try:
        categories = json.loads(paths[0].read_text())
        size = int(json.loads(paths[1].read_text())["image_size"])
        for c in categories:
            for a in CATEGORY_ATTRIBUTES:
                int(c[a])
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(describe(gt, f"categories with {list(CATEGORY_ATTRIBUTES)} and a manifest with "
                                     "'image_size'", f"unreadable ({err!r})")) from None
    return paths[0], categories, size


def write_pool(data: str | Path, out: str | Path, per_combination: int = PER_COMBINATION,
               progress: bool = True) -> Path:
    """Render the pool of the simulated dataset `data` into the new folder `out`; return `out`."""
    data, out = Path(data), Path(out)
    if out.exists():
        raise DataError(describe(out, "a folder that does not exist yet (a pool is never written into)",
                                 "it exists; pick another --out or remove it"))
    if per_combination < 1:
        raise DataError(describe("--per-combination", "a positive integer", per_combination))
    categories_file, categories, size = read_ground_truth(data)
    combos = unused_combinations(categories)
    rng = np.random.default_rng(POOL_SEED)
    with staged_folder(out) as work:
        for combo in tqdm(combos, desc="decoder pool", disable=not progress):
            for k in range(per_combination):
                image, _ = render_image(np.array(combo), size, rng)          # uint8 [S, S, 3]
                Image.fromarray(image).save(work / f"{combination_name(combo)}_{k}.png")
        record = {"data": str(data), "categories_sha256": file_sha256(categories_file),
                  "excluded_categories": len(categories), "combinations": len(combos),
                  "per_combination": per_combination, "images": len(combos) * per_combination,
                  "image_size": size, "seed": POOL_SEED,
                  "command": f"python -m datasets.decoder_pool --data {data} --out {out} "
                             f"--per-combination {per_combination}"}
        (work / POOL_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Render decoder-training images of the attribute combinations no "
                                            "category of a simulated dataset uses")
    p.add_argument("--data", required=True, help="the simulated dataset (python -m datasets.simulate --out ...)")
    p.add_argument("--out", required=True, help="new folder for the images")
    p.add_argument("--per-combination", type=int, default=PER_COMBINATION)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    def body(_folders: RunFolders) -> None:
        out = write_pool(args.data, args.out, args.per_combination, progress_wanted(not args.no_progress))
        record = json.loads((out / POOL_FILE).read_text())
        print(f"wrote {record['images']} images of {record['combinations']} attribute combinations into {out}")

    return guarded(body, "python -m datasets.decoder_pool")


if __name__ == "__main__":
    sys.exit(main())
