"""Image-feature backends: the weight-free features carry category information,
the open_clip backend fails clearly without its dependency and wires a tower correctly."""
import math
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from datasets.simulate import LAYOUTS, PALETTES, SHAPES as SIM_SHAPES, render_image
from models.image_features import (HandcraftedFeatures, OpenClipFeatures, build_image_features,
                                   cached_features, clip_preprocess, figure_shape)
from utils.errors import CheckpointError, ConfigError, DataError, LEAError

SIZE = 64
SHAPES = ("disc", "square", "bar")
COLOURS = ((0.85, 0.15, 0.1), (0.1, 0.7, 0.2), (0.15, 0.25, 0.9))
ORIENTATIONS = (0.0, math.pi / 2)


def render(shape, colour, theta, rng):
    """A jittered object of `shape`/`colour` on a striped background of orientation `theta`: [3, S, S]."""
    yy, xx = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32),
                            torch.arange(SIZE, dtype=torch.float32), indexing="ij")
    period = rng.uniform(5.0, 7.0)
    phase = rng.uniform(0, 2 * math.pi)
    stripes = 0.5 + 0.25 * torch.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period + phase)
    img = stripes.expand(3, SIZE, SIZE).clone() * rng.uniform(0.8, 1.0)
    cx, cy = SIZE / 2 + rng.uniform(-6, 6), SIZE / 2 + rng.uniform(-6, 6)
    r = rng.uniform(9, 13)
    if shape == "disc":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
    elif shape == "square":
        mask = ((xx - cx).abs() < r * 0.85) & ((yy - cy).abs() < r * 0.85)
    else:
        mask = ((xx - cx).abs() < r * 1.4) & ((yy - cy).abs() < r * 0.35)
    col = torch.tensor(colour) + torch.tensor(rng.uniform(-0.08, 0.08, 3), dtype=torch.float32)
    img[:, mask] = col.clamp(0, 1)[:, None]
    return img.clamp(0, 1)


def procedural_dataset(per_class=6, seed=0):
    rng = np.random.default_rng(seed)
    images, labels = [], []
    classes = [(s, c, o) for s in SHAPES for c in COLOURS for o in ORIENTATIONS]
    for label, (s, c, o) in enumerate(classes):
        for _ in range(per_class):
            images.append(render(s, c, o, rng))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels), len(classes)


def loo_1nn_accuracy(feats, labels):
    f = torch.nn.functional.normalize(feats - feats.mean(0), dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(-float("inf"))
    return (labels[sim.argmax(1)] == labels).float().mean().item()


def test_handcrafted_separates_categories_far_above_chance():
    images, labels, n_classes = procedural_dataset()
    feats = HandcraftedFeatures()(images)
    assert feats.shape == (len(images), 256)
    acc = loo_1nn_accuracy(feats, labels)
    assert acc > 5.0 / n_classes, acc
    # every factor of the category is recoverable far above chance (1/2, 1/3, 1/3); the figure-shape block
    # reads the striped background as figure here, so orientation is told a little less well than colour
    orient = labels % len(ORIENTATIONS)
    colour = (labels // len(ORIENTATIONS)) % len(COLOURS)
    shape = labels // (len(ORIENTATIONS) * len(COLOURS))
    assert loo_1nn_accuracy(feats, orient) > 0.85
    assert loo_1nn_accuracy(feats, colour) > 0.9
    assert loo_1nn_accuracy(feats, shape) > 0.55
    # the Gabor block alone tells the stripe orientation
    gabor = HandcraftedFeatures(dim=None).raw_features(images)[:, HandcraftedFeatures.block("gabor")]
    assert loo_1nn_accuracy(gabor, orient) > 0.9


def _figure(shape: str, cx: float, cy: float, size: int = SIZE) -> torch.Tensor:
    """A flat figure on a background with a brightness gradient: [1, 3, S, S] in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    img = torch.tensor([0.3, 0.35, 0.5]).view(3, 1, 1) * (0.8 + 0.4 * xx / size)
    if shape == "square":
        mask = ((xx - cx).abs() < 9) & ((yy - cy).abs() < 9)
    else:
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < 10 ** 2
    img[:, mask] = torch.tensor([0.9, 0.6, 0.1]).view(3, 1)
    return img.unsqueeze(0)


def test_figure_shape_is_position_and_rotation_free_and_tells_shapes_apart():
    square = figure_shape(_figure("square", 24, 26))[0]
    moved = figure_shape(_figure("square", 40, 37))[0]
    turned = figure_shape(torch.rot90(_figure("square", 24, 26), 1, dims=(2, 3)).flip(3))[0]
    disc = figure_shape(_figure("disc", 24, 26))[0]
    assert square.shape == (HandcraftedFeatures.BLOCKS["shape"],)
    moved_gap, turned_gap, shape_gap = ((square - other).norm() for other in (moved, turned, disc))
    assert moved_gap < shape_gap / 4 and turned_gap < shape_gap / 4, (moved_gap, turned_gap, shape_gap)


def test_shape_block_names_the_simulators_shapes_under_every_other_attribute():
    """Simulator stimuli of each shape with random palette, stripes, layout and jitter: the figure-shape
    block alone names the shape (leave-one-out 1-NN) far better than all other blocks together."""
    rng = np.random.default_rng(3)
    per_shape = 12
    attrs = np.array([[s, rng.integers(len(PALETTES)), rng.integers(4), rng.integers(2), rng.integers(len(LAYOUTS))]
                      for s in range(len(SIM_SHAPES)) for _ in range(per_shape)])
    images = torch.from_numpy(np.stack([render_image(a, SIZE, rng)[0] for a in attrs])).permute(0, 3, 1, 2) / 255
    raw = HandcraftedFeatures(dim=None).raw_features(images.float())
    shape = torch.from_numpy(attrs[:, 0])
    block = HandcraftedFeatures.block("shape")
    shape_only = loo_1nn_accuracy(raw[:, block], shape)
    others = loo_1nn_accuracy(torch.cat([raw[:, :block.start], raw[:, block.stop:]], 1), shape)
    assert shape_only > 0.75 and shape_only > others + 0.2, (shape_only, others)


def test_handcrafted_deterministic_and_batch_independent():
    images, _, _ = procedural_dataset(per_class=1)
    ext = HandcraftedFeatures(dim=64, normalize=True)
    full = ext(images)
    torch.testing.assert_close(HandcraftedFeatures(dim=64, normalize=True)(images), full, rtol=0, atol=0)
    singles = torch.cat([ext(images[i:i + 1]) for i in range(len(images))])
    torch.testing.assert_close(singles, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full.norm(dim=1), torch.ones(len(images)))
    assert not torch.allclose(full[0], full[1])


def test_input_validation():
    ext = HandcraftedFeatures()
    with pytest.raises(DataError, match=r"\[B, 3, H, W\]"):
        ext(torch.rand(2, 1, 32, 32))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        ext(torch.rand(2, 3, 32, 32) * 255)
    with pytest.raises(DataError, match="float"):
        ext(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_factory():
    assert build_image_features("handcrafted", dim=32).dim == 32
    with pytest.raises(ConfigError, match="one of"):
        build_image_features("resnet")
    with pytest.raises(ConfigError, match="bogus"):
        build_image_features("handcrafted", bogus=1)


def test_cached_features_reuses_and_keys_by_content(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 40, 48, 3), dtype=np.uint8)
    ext = HandcraftedFeatures(dim=16)
    first = cached_features(ext, images, tmp_path, "train", batch_size=2, progress=False)
    direct = ext(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    torch.testing.assert_close(first, direct)
    files = list(tmp_path.glob("train_*.npy"))
    assert len(files) == 1
    # a second call reads the file (proved by altering it on disk)
    np.save(files[0], np.full((5, 16), 7.0, np.float32))
    assert torch.all(cached_features(ext, images, tmp_path, "train", progress=False) == 7.0)
    # other images or other options get another file
    cached_features(ext, images[::-1].copy(), tmp_path, "train", progress=False)
    cached_features(HandcraftedFeatures(dim=8), images, tmp_path, "train", progress=False)
    assert len(list(tmp_path.glob("train_*.npy"))) == 3
    with pytest.raises(DataError, match="uint8"):
        cached_features(ext, images.astype(np.float32), tmp_path, "train")
    with pytest.raises(ConfigError):
        cached_features(ext, images, tmp_path, "../escape")


def test_clip_preprocess_geometry_and_normalisation():
    img = torch.zeros(1, 3, 100, 300)
    img[..., :, 100:200] = 1.0                         # white centre third
    out = clip_preprocess(img)
    assert out.shape == (1, 3, 224, 224)
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    # the centre crop of the resized image is the white part, apart from edge ringing
    torch.testing.assert_close(out[..., 10:-10, 10:-10], ((1 - mean) / std).expand(1, 3, 204, 204))


def test_open_clip_missing_dependency_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)   # makes `import open_clip` fail
    with pytest.raises(LEAError, match="pip install open_clip_torch.*Features.weights"):
        build_image_features("open_clip", weights="/nowhere/clip.bin")


class TinyVisual(nn.Module):
    """Stand-in image tower with open_clip's attributes (output_dim, image_size)."""

    def __init__(self):
        super().__init__()
        self.output_dim, self.image_size = 8, (32, 32)
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.proj = nn.Linear(4, 8)

    def forward(self, x):
        return self.proj(self.conv(x).mean((2, 3)))


@pytest.fixture
def fake_open_clip(monkeypatch):
    """A fake `open_clip` module: checks only how the backend is wired, not CLIP itself."""
    module = types.ModuleType("open_clip")
    calls = []

    def create_model(arch, pretrained=None):
        calls.append((arch, pretrained))
        model = nn.Module()
        model.visual = TinyVisual()
        return model

    module.create_model = create_model
    monkeypatch.setitem(sys.modules, "open_clip", module)
    return calls


def test_open_clip_wiring_with_fake_module(fake_open_clip, tmp_path):
    torch.manual_seed(0)
    reference = TinyVisual()
    state = {f"visual.{k}": v for k, v in reference.state_dict().items()}
    state["text.token_embedding.weight"] = torch.zeros(3, 2)          # text tower entries are skipped
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "clip.bin")

    ext = build_image_features("open_clip", weights=str(tmp_path / "clip.bin"), normalize=True)
    assert fake_open_clip == [("ViT-H-14", None)]        # image tower arch, never a download tag
    images = torch.rand(3, 3, 48, 40)
    expected = nn.functional.normalize(reference(clip_preprocess(images, 32)), dim=-1)
    torch.testing.assert_close(ext(images), expected)
    info = ext.describe()
    assert info["model"] == "xlm-roberta-large-ViT-H-14" and info["pretrained"] == "frozen_laion5b_s13b_b90k"
    assert ext.dim == 8

    with pytest.raises(ConfigError, match="Features.dim"):
        OpenClipFeatures(weights=str(tmp_path / "clip.bin"), dim=1024)
    with pytest.raises(LEAError, match="not found"):
        OpenClipFeatures(weights=str(tmp_path / "absent.bin"))
    with pytest.raises(LEAError, match="no weights file"):
        OpenClipFeatures()
    torch.save({"visual.conv.weight": torch.zeros(1)}, tmp_path / "bad.bin")
    with pytest.raises(CheckpointError, match=r"conv\.weight.*\[1\] vs model \[4, 3, 4, 4\]"):
        OpenClipFeatures(weights=str(tmp_path / "bad.bin"))


def test_handcrafted_on_simulator_images():
    """Categories of the project's simulator (shape, palette, stripes, layout, with jitter)."""
    simulate = pytest.importorskip("datasets.simulate")
    n_classes, per_class = 20, 5
    rng = np.random.default_rng(0)
    cats = simulate.make_categories(rng, n_classes)
    images, _ = simulate.render_images(np.repeat(cats.attributes, per_class, axis=0), SIZE, rng, "test", False)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    feats = HandcraftedFeatures()(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    assert loo_1nn_accuracy(feats, labels) > 5.0 / n_classes
