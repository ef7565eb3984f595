"""The decoder's training images over all subjects of a dataset: each image once, no test image."""
import numpy as np

from datasets import load_subject
from datasets.simulate import BOLD_DIR, GOD_DIR
from training.stage_tokenizer import stimulus_images
from utils.config import DataConfig


def digests(images: np.ndarray) -> list[bytes]:
    return [im.tobytes() for im in images]


def test_bold5000_subjects_pooled_deduplicated_without_test_images(sim_root):
    subjects = ["CSI1", "CSI2"]
    train, test, _ = stimulus_images(DataConfig(dataset="BOLD5000", path=str(sim_root / BOLD_DIR),
                                                subjects=subjects), "test")
    loaded = [load_subject("BOLD5000", sim_root / BOLD_DIR, s) for s in subjects]
    test_set = {d for data in loaded for d in digests(data.test_images)}
    train_set = {d for data in loaded for d in digests(data.train_images)} - test_set
    assert len(digests(train)) == len(set(digests(train))) == len(train_set)
    assert set(digests(train)) == train_set and set(digests(test)) == test_set
    assert len(test) == len(test_set)


def test_god_subjects_share_one_image_set(sim_root):
    train, test, _ = stimulus_images(DataConfig(dataset="GOD", path=str(sim_root / GOD_DIR),
                                                subjects=["sbj_1", "sbj_2"]), "test")
    one = load_subject("GOD", sim_root / GOD_DIR, "sbj_1")
    assert set(digests(train)) == set(digests(one.train_images)) and len(train) == len(set(digests(train)))
    assert len(test) == len(one.test_images)


def test_an_image_tested_for_one_subject_never_trains():
    from training.stage_tokenizer import _unique_images

    rng = np.random.default_rng(0)
    a, b, c = (rng.integers(0, 255, (1, 4, 4, 3), dtype=np.uint8) for _ in range(3))
    test, test_digests = _unique_images([c])
    train, _ = _unique_images([np.concatenate([a, b]), np.concatenate([b, c, a])], exclude=test_digests)
    assert np.array_equal(train, np.concatenate([a, b])) and np.array_equal(test, c)


def write_folder(folder, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(count):
        sub = folder / ("nested" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        h, w = (40, 70) if i % 3 else (90, 50)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(sub / f"im{i:02d}.png")


def test_any_folder_of_images(tmp_path):
    import pytest
    from utils.errors import DataError

    write_folder(tmp_path / "images", 12)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    train, test, _ = stimulus_images(DataConfig(image_folder=str(tmp_path / "images"), image_size=32), "test")
    assert train.shape == (4, 32, 32, 3) and test.shape == (8, 32, 32, 3) and train.dtype == np.uint8
    with pytest.raises(DataError, match="more than 8 distinct images"):
        write_folder(tmp_path / "few", 5)
        stimulus_images(DataConfig(image_folder=str(tmp_path / "few"), image_size=32), "test")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"no jpeg")
    with pytest.raises(DataError, match="broken.jpg: expected a readable image"):
        stimulus_images(DataConfig(image_folder=str(tmp_path / "images"), image_size=32), "test")
    with pytest.raises(DataError, match="no such folder"):
        stimulus_images(DataConfig(image_folder=str(tmp_path / "none"), image_size=32), "test")


def test_image_folder_only_for_image_stages(tmp_path):
    import pytest
    from utils.config import config_from_dict
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match="Data.image_folder trains only tokenizer / maskgit"):
        config_from_dict({"KIND": "lea", "Data": {"image_folder": str(tmp_path)}}, "x.yaml")
