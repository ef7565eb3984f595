"""Metrics against values computed by hand on tiny inputs, plus property checks."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from evaluation import classifier as clf
from evaluation import metrics as M
from utils.errors import CheckpointError, ConfigError, DataError

C1 = (0.01 * 255) ** 2  # 6.5025
C2 = (0.03 * 255) ** 2  # 58.5225


def pixels(values) -> np.ndarray:
    """Per-image RGB triples -> uint8 images [..., 1, 1, 3]."""
    a = np.asarray(values, dtype=np.uint8)
    return a.reshape(*a.shape[:-1], 1, 1, 3)


# ----------------------------------------------------------------------------- Metric and reporting

def test_metric_needs_value_or_reason():
    with pytest.raises(ValueError):
        M.Metric("x", None, 0.5)
    with pytest.raises(ValueError):
        M.Metric("x", 0.3, 0.5, skipped="why")
    with pytest.raises(ValueError):
        M.Metric("x", float("nan"), 0.5)
    m = M.skipped("x", "no weights", chance=0.02)
    assert m.value is None and m.skipped == "no weights" and m.to_dict()["chance"] == 0.02


def test_summarize_csv_and_write_never_overwrites(tmp_path):
    metrics = [M.Metric("a", np.float32(0.25), 0.5, details={"k": 1, "ci95": [0.1, 0.4], "p_value": 0.01}),
               M.skipped("b", "no weights", 0.02)]
    summary = M.summarize(metrics)
    assert summary["a"]["value"] == 0.25 and summary["b"]["skipped"] == "no weights"
    empty = {"ci_low": None, "ci_high": None, "p_value": None, "sd_over_samples": None}
    assert M.to_csv_rows(metrics) == [{"name": "a", "value": 0.25, "chance": 0.5, "skipped": None,
                                       **empty, "ci_low": 0.1, "ci_high": 0.4, "p_value": 0.01},
                                      {"name": "b", "value": None, "chance": 0.02, "skipped": "no weights", **empty}]
    with pytest.raises(ConfigError, match="'a' twice"):
        M.summarize(metrics + [M.Metric("a", 1.0, None)])
    json_path, csv_path = M.write_metrics(tmp_path, metrics)
    assert json.loads(json_path.read_text())["a"]["details"]["k"] == 1
    rows = list(csv.DictReader(csv_path.open()))
    assert rows[0] == {"name": "a", "value": "0.25", "chance": "0.5", "skipped": "", "ci_low": "0.1",
                       "ci_high": "0.4", "p_value": "0.01", "sd_over_samples": ""}
    assert rows[1]["skipped"] == "no weights" and rows[1]["value"] == ""
    with pytest.raises(FileExistsError):
        M.write_metrics(tmp_path, metrics)


# ----------------------------------------------------------------------------- image inputs

def test_as_pixels_forms_and_errors():
    u8 = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    f = torch.from_numpy(np.moveaxis(u8, -1, 1).astype(np.float32) / 255)  # [2, 3, 4, 5]
    np.testing.assert_allclose(M.as_pixels(f), u8.astype(np.float64), atol=1e-4)
    with pytest.raises(DataError, match="range"):
        M.as_pixels(f + 1.5)
    with pytest.raises(DataError, match=r"\[\.\.\., 3, H, W\]"):
        M.as_pixels(np.zeros((2, 4, 5, 3), np.float32))
    with pytest.raises(DataError, match="dtype int64"):
        M.as_pixels(np.zeros((2, 4, 5, 3), np.int64))
    with pytest.raises(DataError, match="reconstructions"):
        M.pairwise_identification(u8, u8[:, None, :3])


# ----------------------------------------------------------------------------- pixel identification

def test_pairwise_mse_by_hand():
    gt = pixels([[0] * 3, [10] * 3, [20] * 3])
    recon = pixels([[[1] * 3, [12] * 3],    # vs gt 0,1,2: MSE (1, 81, 361) -> 2/2;  (144, 4, 64) -> 0/2
                    [[10] * 3, [4] * 3],    # own gt 1: (100, 0, 100) -> 2/2;  (16, 36, 256) -> 1/2
                    [[15] * 3, [20] * 3]])  # own gt 2: (225, 25, 25) tie -> 1/2;  (400, 100, 0) -> 2/2
    m = M.pairwise_identification(gt, recon, "mse")
    assert m.name == "pairwise_mse" and m.chance == 0.5
    np.testing.assert_allclose(m.details["per_image"], [0.5, 0.75, 0.75])
    assert m.value == pytest.approx((0.5 + 0.75 + 0.75) / 3)
    assert m.details["n_samples"] == 2


def test_pairwise_pcc_by_hand():
    g = [[0, 10, 20], [20, 10, 0], [0, 20, 0]]
    # centred: (-10, 0, 10), (10, 0, -10), (-20/3, 40/3, -20/3): r(g0,g1) = -1, r(g0,g2) = r(g1,g2) = 0
    scores = M._pearson_scores(np.asarray(g, float), np.asarray(g, float)[:, None])
    np.testing.assert_allclose(scores[:, 0], [[1, -1, 0], [-1, 1, 0], [0, 0, 1]], atol=1e-12)
    recon = pixels([[g[0], g[1]], [g[1], g[1]], [g[2], g[2]]])
    # image 0: sample 0 beats both others (1 > -1, 1 > 0) -> 1; sample 1 = g1: own r = -1 beats none -> 0
    m = M.pairwise_identification(pixels(g), recon, "pcc")
    np.testing.assert_allclose(m.details["per_image"], [0.5, 1.0, 1.0])
    assert m.value == pytest.approx(2.5 / 3)


def test_pairwise_unknown_score():
    with pytest.raises(ConfigError, match="mse, pcc, ssim"):
        M.pairwise_identification(pixels([[0] * 3, [1] * 3]), pixels([[0] * 3, [1] * 3]), "psnr")


# ----------------------------------------------------------------------------- SSIM

def constant_image(value, size=7):
    return np.full((size, size, 3), value, np.uint8)


def test_ssim_constant_images_by_hand():
    # 7x7: a single window. mu_x = 10, mu_y = 20, no variance:
    # SSIM = (2*10*20 + C1)(0 + C2) / ((10^2 + 20^2 + C1)(0 + C2)) = 406.5025 / 506.5025
    assert M.ssim(constant_image(10), constant_image(20)) == pytest.approx(406.5025 / 506.5025, rel=1e-12)
    assert M.ssim(constant_image(10), constant_image(10)) == pytest.approx(1.0, rel=1e-12)


def test_ssim_one_window_with_variance_by_hand():
    x = np.zeros((7, 7, 3), np.uint8)
    x[3, 3] = 49   # mean 1, mean of squares 49^2/49 = 49, sample var = 49/48 * (49 - 1) = 49
    y = x * 2      # mean 2, sample var 4*49 = 196, sample cov 2*49 = 98
    y[..., 2] = x[..., 2]  # channel 2 identical -> SSIM 1
    s01 = (2 * 1 * 2 + C1) * (2 * 98 + C2) / ((1 + 4 + C1) * (49 + 196 + C2))  # channels 0 and 1
    assert M.ssim(x, y) == pytest.approx((2 * s01 + 1.0) / 3, rel=1e-12)
    assert M.ssim(y, x) == pytest.approx(M.ssim(x, y), rel=1e-12)


def skimage_recipe_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Reference: skimage's algorithm (reflect-mode 7x7 uniform filter over the whole image, crop 3, mean)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    values = []
    for c in range(a.shape[-1]):
        x, y = a[..., c], b[..., c]
        ux, uy = uniform_filter(x, 7), uniform_filter(y, 7)
        norm = 49 / 48
        vx = norm * (uniform_filter(x * x, 7) - ux * ux)
        vy = norm * (uniform_filter(y * y, 7) - uy * uy)
        vxy = norm * (uniform_filter(x * y, 7) - ux * uy)
        s = (2 * ux * uy + C1) * (2 * vxy + C2) / ((ux ** 2 + uy ** 2 + C1) * (vx + vy + C2))
        values.append(s[3:-3, 3:-3].mean())
    return float(np.mean(values))


def test_ssim_matches_skimage_recipe_and_pair_matrix():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (3, 9, 12, 3)).astype(np.uint8)
    noise = rng.integers(-60, 60, (3, 2, 9, 12, 3))
    recon = np.clip(gt[:, None].astype(int) + noise, 0, 255).astype(np.uint8)
    scores = M.ssim_scores(gt, recon)  # [3, 2, 3]
    for i in range(3):
        for s in range(2):
            for j in range(3):
                assert scores[i, s, j] == pytest.approx(skimage_recipe_ssim(recon[i, s], gt[j]), abs=1e-12)
    m = M.pairwise_identification(gt, recon, "ssim")
    assert m.value == pytest.approx(M.pairwise_rates(scores, True).mean())


def test_ssim_rejects_small_images():
    with pytest.raises(DataError, match="7x7"):
        M.ssim(constant_image(1, size=6), constant_image(1, size=6))


@pytest.mark.parametrize("score", ["mse", "pcc", "ssim"])
def test_perfect_reconstruction_identifies_everything(score):
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, (5, 12, 12, 3)).astype(np.uint8)
    recon = np.repeat(gt[:, None], 2, axis=1)
    assert M.pairwise_identification(gt, recon, score).value == 1.0
    float_recon = torch.from_numpy(np.moveaxis(recon, -1, 2).astype(np.float64) / 255)  # [N, S, 3, H, W]
    assert M.pairwise_identification(gt, float_recon, score).value == 1.0


@pytest.mark.parametrize("score", ["mse", "pcc"])
def test_unrelated_reconstructions_near_chance(score):
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 256, (150, 8, 8, 3)).astype(np.uint8)
    recon = rng.integers(0, 256, (150, 4, 8, 8, 3)).astype(np.uint8)
    # each rate is about uniform on [0, 1] (sd 0.29): the mean of 600 has sd 0.012
    assert abs(M.pairwise_identification(gt, recon, score).value - 0.5) < 0.05


# ----------------------------------------------------------------------------- n-way top-1

PROBS = np.array([0.1, 0.5, 0.3, 0.1])


def test_n_way_top1_by_hand():
    probs = np.stack([PROBS, PROBS])[:, None]  # [N=2, S=1, C=4]
    gt = np.array([1, 2])
    # image 0: class 1 is the top class -> no rival -> always right.
    # image 1: class 2 (0.3) is beaten by class 1 (0.5): m = 1 rival among 3 distractors.
    #   n=2: P(draw avoids it) = 2/3;  n=3: C(2,2)/C(3,2) = 1/3;  n=4: 0.
    for n, exact in [(2, 2 / 3), (3, 1 / 3), (4, 0.0)]:
        m = M.n_way_top1(gt, probs, n=n, trials=4000, seed=0)
        assert m.details["exact_expectation"] == pytest.approx((1 + exact) / 2)
        assert m.value == pytest.approx((1 + exact) / 2, abs=0.02)
        assert m.chance == 1 / n
    assert M.n_way_top1(gt, probs, n=4, trials=10).value == 0.5  # all classes drawn: deterministic


def test_n_way_top1_ties_fail_and_probabilities_as_gt():
    tied = np.array([[0.4, 0.4, 0.1, 0.1]])
    assert M.n_way_top1(np.array([0]), tied, n=4, trials=5).value == 0.0
    gt_probs = np.array([[0.0, 0.2, 0.7, 0.1]])  # arg-max class 2
    m = M.n_way_top1(gt_probs, PROBS[None], n=4, trials=5)
    assert m.value == 0.0 and m.details["gt_classes"] == [2]


def test_n_way_matches_explicit_class_draws():
    """The hypergeometric shortcut has the law of drawing the n-1 classes one by one."""
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(10), size=(6, 2))  # [6, 2, 10]
    gt = rng.integers(0, 10, 6)
    n, trials = 4, 3000
    explicit = np.zeros((6, 2))
    for i in range(6):
        others = np.array([k for k in range(10) if k != gt[i]])
        for s in range(2):
            for _ in range(trials):
                drawn = rng.choice(others, n - 1, replace=False)
                explicit[i, s] += probs[i, s, gt[i]] > probs[i, s, drawn].max()
    m = M.n_way_top1(gt, probs, n=n, trials=trials, seed=4)
    assert m.value == pytest.approx(explicit.mean() / trials, abs=0.02)
    assert m.details["exact_expectation"] == pytest.approx(explicit.mean() / trials, abs=0.02)


def test_n_way_reproducible_and_validated():
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(100), size=(8, 3))
    gt = rng.integers(0, 100, 8)
    a = M.n_way_top1(gt, probs, n=50, trials=100, seed=7)
    assert a.value == M.n_way_top1(gt, probs, n=50, trials=100, seed=7).value
    assert a.value == M.n_way_top1(gt, probs, n=50, trials=100, seed=np.random.default_rng(7)).value
    with pytest.raises(ConfigError, match="n-way"):
        M.n_way_top1(gt, probs, n=101)
    with pytest.raises(DataError, match="classes"):
        M.n_way_top1(np.array([100] * 8), probs)


# ----------------------------------------------------------------------------- classifier n-way

def mean_colour_classifier(images: torch.Tensor) -> torch.Tensor:
    """Toy 3-class classifier: the class is the brightest channel."""
    return (20 * images.mean(dim=(2, 3))).softmax(-1)  # [B, 3]


def test_classifier_n_way_with_toy_classifier():
    gt = pixels([[200, 0, 0], [0, 200, 0], [0, 0, 200]])
    recon = pixels([[[190, 10, 0], [0, 190, 10]],  # right, wrong (green is brightest)
                    [[0, 250, 0], [10, 180, 0]],
                    [[0, 0, 90], [0, 0, 255]]])
    m = M.classifier_n_way(gt, recon, mean_colour_classifier, n=3, trials=10)
    assert m.name == "classifier_3way_top1" and m.chance == 1 / 3
    assert m.details["gt_classes"] == [0, 1, 2]
    assert m.value == pytest.approx(5 / 6)  # 5 of the 6 samples have their class on top of all 3


def test_classifier_n_way_skipped_without_classifier(tmp_path):
    with pytest.raises(CheckpointError, match="vit_h_14_swag.pth.*no such file"):  # a given path must exist
        clf.classifier_or_reason(tmp_path / "vit_h_14_swag.pth")
    classifier, reason = clf.classifier_or_reason(None)
    assert classifier is None and "--classifier-weights" in reason
    m = M.classifier_n_way(pixels([[0] * 3, [1] * 3]), pixels([[0] * 3, [1] * 3]), classifier, reason)
    assert m.value is None and m.skipped == reason and m.chance == 1 / 50
    assert clf.classifier_or_reason(None)[1].startswith("no torchvision ViT-H/14")


def test_load_imagenet_classifier_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        clf.load_imagenet_classifier(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"head.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(CheckpointError, match="vit_h_14"):
        clf.load_imagenet_classifier(bad)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match="state dict"):
        clf.classifier_or_reason(listed)


def test_load_imagenet_classifier_loads_and_predicts(tmp_path, monkeypatch):
    """The loading path (weights_only, meta build, strict assign) on a tiny ViT of the same class."""
    from torchvision.models.vision_transformer import VisionTransformer

    def tiny_vit(weights, image_size, num_classes):
        assert weights is None and image_size == clf.VIT_H_14_IMAGE_SIZE and num_classes == 1000
        return VisionTransformer(image_size=28, patch_size=14, num_layers=1, num_heads=2, hidden_dim=8,
                                 mlp_dim=16, num_classes=num_classes)

    monkeypatch.setattr(clf, "vit_h_14", tiny_vit)
    monkeypatch.setattr(clf, "imagenet_eval_transform", lambda: torch.nn.Upsample(size=(28, 28)))
    torch.manual_seed(0)
    reference = tiny_vit(None, clf.VIT_H_14_IMAGE_SIZE, 1000).eval()
    path = tmp_path / "tiny_vit.pth"
    torch.save(reference.state_dict(), path)
    classifier, reason = clf.classifier_or_reason(path)
    assert reason is None
    images = torch.rand(3, 3, 40, 40)
    with torch.no_grad():
        expected = reference(torch.nn.functional.interpolate(images, size=(28, 28))).softmax(-1)
    torch.testing.assert_close(classifier(images), expected)


def test_imagenet_eval_transform_shape():
    out = clf.imagenet_eval_transform()(torch.rand(2, 3, 64, 80))
    assert out.shape == (2, 3, clf.VIT_H_14_IMAGE_SIZE, clf.VIT_H_14_IMAGE_SIZE)


def test_image_net_classifier_batches():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    c = clf.ImageNetClassifier(model=model, transform=torch.nn.Identity(), batch_size=2)
    x = torch.rand(5, 3, 4, 4)
    probs = c(x)
    torch.testing.assert_close(probs, model(x).softmax(-1))
    with pytest.raises(DataError):
        c(torch.rand(5, 4, 4))


# ----------------------------------------------------------------------------- feature identification

FEATS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
RECON_FEATS = np.array([[1.0, 0.0],   # cos with targets (1, 0, 1/sqrt2): identified -> 1
                        [1.0, 1.0],   # own cos 1/sqrt2 ties target 0 and loses to target 2 -> 0
                        [1.0, 2.0]])  # cos (1/sqrt5, 2/sqrt5, 3/sqrt10 = 0.949): own best -> 1


def test_feature_identification_by_hand():
    m = M.feature_identification(FEATS, RECON_FEATS, metric="cosine")
    assert m.chance == 0.5 and m.details["per_image"] == [1.0, 0.0, 1.0]
    for n in (2, 3):  # image 1 has both others as rivals: fails every draw; the others never fail
        top = M.feature_n_way_top1(FEATS, RECON_FEATS, n=n, metric="cosine", trials=50)
        assert top.value == pytest.approx(2 / 3) and top.chance == 1 / n
    with pytest.raises(ConfigError, match="pcc, cosine"):
        M.feature_identification(FEATS, RECON_FEATS, metric="l2")


def test_feature_identification_chance_on_random_features():
    rng = np.random.default_rng(6)
    gt, recon = rng.normal(size=(500, 32)), rng.normal(size=(500, 4, 32))
    # 2000 rates about uniform on [0, 1]: the mean has sd 0.0065
    assert abs(M.feature_identification(gt, recon).value - 0.5) < 0.03
    assert abs(M.feature_n_way_top1(gt, recon, n=10, trials=200).value - 0.1) < 0.03
    assert M.feature_identification(gt, gt[:, None] + 0.01 * recon).value == 1.0


# ----------------------------------------------------------------------------- LPIPS and FID

def test_lpips_skipped_or_with_a_given_distance():
    gt = pixels([[0] * 3, [10] * 3, [20] * 3])
    recon = pixels([[[1] * 3, [12] * 3], [[10] * 3, [4] * 3], [[15] * 3, [20] * 3]])
    m = M.lpips_identification(gt, recon)
    assert m.value is None and "lpips" in m.skipped and m.chance == 0.5

    def mse_distance(a, b):
        return ((a - b) ** 2).mean(dim=(1, 2, 3))

    with_distance = M.lpips_identification(gt, recon, mse_distance)
    assert with_distance.value == pytest.approx(M.pairwise_identification(gt, recon, "mse").value)


def test_frechet_distance_by_hand():
    # 1-D: a = (0, 2): mean 1, var 2;  b = (1, 5): mean 3, var 8
    # (1 - 3)^2 + 2 + 8 - 2 sqrt(2 * 8) = 4 + 10 - 8 = 6
    assert M.frechet_distance([[0.0], [2.0]], [[1.0], [5.0]]) == pytest.approx(6.0)
    rng = np.random.default_rng(7)
    a = rng.normal(size=(50, 4))
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_fid_skipped_or_with_given_features():
    gt = pixels([[0, 0, 0], [200, 0, 0], [0, 100, 50]])
    recon = pixels([[[10, 0, 0], [0, 0, 0]], [[190, 5, 0], [210, 0, 0]], [[0, 90, 60], [0, 120, 40]]])
    assert M.fid(gt, recon).skipped == M.FID_REASON

    def colour(images):
        return images.mean(dim=(2, 3))  # [B, 3]

    m = M.fid(gt, recon, colour)
    expected = M.frechet_distance(recon.reshape(6, 3) / 255.0, gt.reshape(3, 3) / 255.0)
    assert m.value == pytest.approx(expected, rel=1e-5) and m.details == {"n_gt": 3, "n_recon": 6}


# ----------------------------------------------------------------------------- encoding metrics

MEASURED = np.array([[1.0, 1, 1, 5], [2, 2, 2, 5], [3, 3, 3, 5]])
PREDICTED = np.array([[2.0, 3, 1, 1], [4, 2, 3, 2], [6, 1, 2, 3]])
# voxel 0: (2, 4, 6) vs (1, 2, 3) -> r = 1; voxel 1: (3, 2, 1) -> -1;
# voxel 2: centred (-1, 0, 1).(-1, 1, 0) / (sqrt2 sqrt2) = 1/2; voxel 3: measured constant -> nan


def test_voxelwise_pearson_by_hand():
    r = M.voxelwise_pearson(MEASURED, PREDICTED)
    np.testing.assert_allclose(r[:3], [1.0, -1.0, 0.5])
    assert np.isnan(r[3])


def test_encoding_pearson_summary_and_rois():
    metrics = {m.name: m for m in M.encoding_pearson(MEASURED, PREDICTED, [2, 2], ["V1", "V2"])}
    assert metrics["encoding_pearson_mean"].value == pytest.approx((1 - 1 + 0.5) / 3)
    assert metrics["encoding_pearson_median"].value == pytest.approx(0.5)
    assert metrics["encoding_pearson_mean"].details == {"n_voxels": 4, "n_undefined": 1}
    assert metrics["encoding_pearson_V1"].value == pytest.approx(0.0)   # (1 + -1) / 2
    assert metrics["encoding_pearson_V2"].value == pytest.approx(0.5)   # only voxel 2 defined
    assert metrics["encoding_pearson_mean"].chance == 0.0
    only_constant = M.encoding_pearson(MEASURED[:, 3:], PREDICTED[:, 3:])
    assert all(m.value is None and "constant" in m.skipped for m in only_constant)
    with pytest.raises(ConfigError, match="summing to the 4 voxels"):
        M.encoding_pearson(MEASURED, PREDICTED, [2, 1], ["V1", "V2"])
    with pytest.raises(ConfigError, match="one length"):
        M.encoding_pearson(MEASURED, PREDICTED, [4], ["V1", "V2"])


def test_encoding_mse_by_hand():
    measured = np.array([[0.0, 0.0], [2.0, 2.0]])
    predicted = np.array([[1.0, 0.0], [2.0, 4.0]])
    # voxel 0: errors (1, 0) -> 0.5; voxel 1: (0, 2) -> squared (0, 4) -> 2; all: (1 + 0 + 0 + 4) / 4 = 1.25
    metrics = {m.name: m.value for m in M.encoding_mse(measured, predicted, [1, 1], ["A", "B"])}
    assert metrics == pytest.approx({"encoding_mse_mean": 1.25, "encoding_mse_A": 0.5, "encoding_mse_B": 2.0})
    with pytest.raises(DataError, match="one shape"):
        M.encoding_mse(measured, predicted[:1])


def test_fmri_identification_by_hand():
    measured = np.array([[0.0, 10, 20], [20, 10, 0], [0, 20, 0]])  # pairwise r: -1, 0, 0 (see PCC test)
    predicted = measured[[0, 0, 2]]  # image 1 predicted as image 0: own r = -1, beaten by r = 1 and 0
    metrics = {m.name: m for m in M.fmri_identification(measured, predicted, n_way=2, trials=20)}
    assert metrics["fmri_pairwise_pcc"].value == pytest.approx(2 / 3)
    assert metrics["fmri_top1_of_3_pcc"].value == pytest.approx(2 / 3)
    assert metrics["fmri_top1_of_3_pcc"].chance == pytest.approx(1 / 3)
    assert metrics["fmri_2way_top1_pcc"].value == pytest.approx(2 / 3)  # image 1 loses to both candidates


def test_noise_ceiling_by_hand():
    noise_free = np.array([[1.0], [2.0], [3.0]])
    measured = np.array([[1.0], [3.0], [2.0]])  # r(noise_free, measured) = 1/2 (as voxel 2 above)
    metrics = {m.name: m.value for m in M.noise_ceiling_fraction(np.array([0.25]), noise_free, measured)}
    assert metrics == pytest.approx({"noise_ceiling_mean_r": 0.5, "fraction_of_noise_ceiling": 0.5,
                                     "median_voxel_fraction_of_ceiling": 0.5})
    # noise model: var_s of (1, 2, 3) = 2/3; noise_sd 1 over 3 repeats -> 1/3; r = sqrt((2/3) / 1)
    model = M.noise_ceiling_fraction(np.array([0.25]), noise_free, noise_sd=1.0, n_repeats=3)
    assert model[0].value == pytest.approx(math.sqrt(2 / 3))
    with pytest.raises(ConfigError, match="either measured"):
        M.noise_ceiling_fraction(np.array([0.25]), noise_free)


def test_noise_ceiling_model_matches_simulation():
    rng = np.random.default_rng(8)
    n_images, n_voxels, n_repeats, noise_sd = 2000, 20, 4, 1.5
    noise_free = rng.normal(size=(n_images, n_voxels))
    measured = noise_free + rng.normal(scale=noise_sd / math.sqrt(n_repeats), size=noise_free.shape)
    r_pred = M.voxelwise_pearson(measured, noise_free)
    empirical = M.noise_ceiling_fraction(r_pred, noise_free, measured)
    model = M.noise_ceiling_fraction(r_pred, noise_free, noise_sd=noise_sd, n_repeats=n_repeats)
    assert empirical[1].value == pytest.approx(1.0)  # the noise-free responses reach the ceiling exactly
    assert model[0].value == pytest.approx(empirical[0].value, abs=0.01)
