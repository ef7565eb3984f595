"""The decoder pool: renders of attribute combinations no category of the simulated dataset uses,
readable by the image-folder loader, never written into an existing folder."""
import json
from math import prod

import numpy as np
import pytest

from datasets.decoder_pool import (CATEGORY_ATTRIBUTES, POOL_FILE, combination_name, main, parse_combination_name,
                                   pool_attributes, unused_combinations, write_pool)
from datasets.image_folder import image_files, load_image_folder
from datasets.simulate import ATTRIBUTE_SIZES, GROUND_TRUTH_DIR
from utils.errors import DataError


def test_pool_holds_every_unused_combination_and_no_category(sim_root, tmp_path):
    categories = json.loads((sim_root / GROUND_TRUTH_DIR / "categories.json").read_text())
    used = {combination_name(tuple(c[a] for a in CATEGORY_ATTRIBUTES)) for c in categories}
    out = write_pool(sim_root, tmp_path / "pool", per_combination=1, progress=False)

    names = {p.stem.rsplit("_", 1)[0] for p in image_files(out)}
    assert len(names) == prod(ATTRIBUTE_SIZES) - len(used) == len(unused_combinations(categories))
    assert not names & used
    record = json.loads((out / POOL_FILE).read_text())
    assert record["images"] == len(names) and record["excluded_categories"] == len(categories)
    images = load_image_folder(out, record["image_size"], progress=False)
    assert images.shape == (len(names), record["image_size"], record["image_size"], 3)
    assert images.dtype == np.uint8 and images.std() > 10        # rendered pictures, not blanks
    attributes = pool_attributes(image_files(out))                # [N, A], read back from the names
    assert {combination_name(tuple(a)) for a in attributes} == names


def test_combination_names_read_back_and_other_names_are_refused():
    for combo in ((0, 0, 0, 0, 0), tuple(n - 1 for n in ATTRIBUTE_SIZES), (2, 3, 1, 1, 2)):
        assert parse_combination_name(combination_name(combo)) == combo
    for name in ("disc_ember_0deg_3cyc", "blob_ember_0deg_3cyc_centre", "disc_ember_7deg_3cyc_centre",
                 "disc_ember_0_3cyc_centre"):
        with pytest.raises(DataError, match="combination_name"):
            parse_combination_name(name)


def test_pool_refuses_an_existing_folder_and_a_folder_without_ground_truth(sim_root, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.png").write_bytes(b"mine")
    assert main(["--data", str(sim_root), "--out", str(tmp_path / "taken"), "--no-progress"]) == 2
    assert "never written into" in capsys.readouterr().err
    assert (tmp_path / "taken" / "keep.png").read_bytes() == b"mine"
    with pytest.raises(DataError, match="categories.json"):
        write_pool(tmp_path / "nowhere", tmp_path / "pool", progress=False)
    assert not (tmp_path / "pool").exists()
