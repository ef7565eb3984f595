"""models/lea.py: the decode / encode flows over tiny random-weight networks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.metrics import resize_images
from models.fmri_autoencoder import FMRIAutoencoder, FMRIAutoencoderConfig
from models.image_features import build_image_features
from models.lea import LEA, check_fmri_fits, load_trained_network, to_uint8
from models.maskgit import MaskGITConfig, MaskGITTransformer
from models.vqgan import VQGAN, VQGANConfig, tokenizer_input
from utils.config import AlignConfig, SamplingConfig, to_dict
from utils.errors import CheckpointError
from utils.io import atomic_torch_save

FEATURE_DIM = 16
ROI_PATCH = (5, 7, 4)
IMAGE_SIZE = 16
NUM_TEST = 6


def tiny_configs(roi_patch=ROI_PATCH) -> dict[str, object]:
    """Model configs small enough to build and run in milliseconds."""
    return {
        "fmri_autoencoder": FMRIAutoencoderConfig(roi_patch=tuple(roi_patch), patch_size=4, embed_dim=16,
                                                  encoder_depth=1, num_heads=2, decoder_embed_dim=16,
                                                  decoder_depth=1, decoder_num_heads=2, latent_dim=12),
        "tokenizer": VQGANConfig(resolution=IMAGE_SIZE, ch_base=32, ch_mult=(1, 1), num_res_blocks=1,
                                 num_res_mids=1, ch_latent=8, num_codebook=16, dim_codebook=8),
        "maskgit": MaskGITConfig(num_codebook=16, token_grid=IMAGE_SIZE // 2, embed_dim=16, depth=1,
                                 num_heads=2, drop_rate=0.0, condition_dim=FEATURE_DIM),
    }


NETWORK_CLASSES = {"fmri_autoencoder": FMRIAutoencoder, "tokenizer": VQGAN, "maskgit": MaskGITTransformer}


def write_model_file(path: Path, kind: str, config, seed: int = 0) -> Path:
    """A model file in train.py's final format with random weights."""
    torch.manual_seed(seed)
    model = NETWORK_CLASSES[kind](config)
    return atomic_torch_save(path, {"model": model.state_dict(), "kind": kind, "model_config": to_dict(config)})


def handcrafted(dim: int = FEATURE_DIM):
    extractor = build_image_features("handcrafted", dim=dim, normalize=True)

    def features(images: np.ndarray) -> torch.Tensor:
        return extractor(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)
    return features


def random_images(n: int, size: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture
def lea() -> LEA:
    torch.manual_seed(0)
    cfgs = tiny_configs()
    model = LEA(FMRIAutoencoder(cfgs["fmri_autoencoder"]), MaskGITTransformer(cfgs["maskgit"]),
                VQGAN(cfgs["tokenizer"]), handcrafted(), batch_size=4, progress=False)
    rng = np.random.default_rng(1)
    n_train = 20
    model.fit_alignment(rng.normal(size=(n_train, sum(ROI_PATCH))).astype(np.float32), random_images(10),
                        rng.integers(0, 10, n_train), AlignConfig())
    return model


def test_decode_shapes_and_one_encoder_pass_per_trial(lea):
    calls = {"encode_rows": 0, "generate": 0}
    encode, generate = lea.fmri_ae.encode, lea.maskgit.generate

    def counting_encode(x):
        calls["encode_rows"] += x.shape[0]
        return encode(x)

    def counting_generate(cond, **kw):
        calls["generate"] += 1
        assert cond.shape[0] * kw["num_samples"] <= lea.batch_size or cond.shape[0] == 1
        return generate(cond, **kw)

    lea.fmri_ae.encode = counting_encode
    lea.maskgit.generate = counting_generate
    lea.tokenizer.encode = lambda *a: pytest.fail("ground-truth images must never be tokenised")
    fmri = np.random.default_rng(2).normal(size=(NUM_TEST, sum(ROI_PATCH))).astype(np.float32)
    out = lea.decode(fmri, SamplingConfig(steps=3, num_samples=2), torch.Generator().manual_seed(0))
    assert out.images.shape == (NUM_TEST, 2, IMAGE_SIZE, IMAGE_SIZE, 3) and out.images.dtype == np.uint8
    assert calls["encode_rows"] == NUM_TEST            # once per trial, not per sample
    assert calls["generate"] == NUM_TEST // (lea.batch_size // 2)  # chunks of trials x samples
    assert out.features.shape == (NUM_TEST, FEATURE_DIM)


def test_decode_is_reproducible_with_a_seed(lea):
    fmri = np.random.default_rng(3).normal(size=(4, sum(ROI_PATCH))).astype(np.float32)
    sampling = SamplingConfig(steps=3, num_samples=2)
    a = lea.decode(fmri, sampling, torch.Generator().manual_seed(5)).images
    b = lea.decode(fmri, sampling, torch.Generator().manual_seed(5)).images
    np.testing.assert_array_equal(a, b)


def test_encode_shape_and_restandardisation(lea):
    images = random_images(NUM_TEST, seed=4)
    lea.heads.restandardize = True
    out = lea.encode(images)
    assert out.fmri.shape == (NUM_TEST, sum(ROI_PATCH)) and out.fmri.dtype == np.float32
    # re-standardised latents carry the training latents' per-dimension mean
    np.testing.assert_allclose(out.fmri_latents.mean(0).numpy(), lea.heads.stats["fmri_mean"].numpy(), atol=1e-4)
    lea.heads.restandardize = False
    plain = lea.encode(images)
    assert not np.allclose(plain.fmri_latents.numpy(), out.fmri_latents.numpy())


def test_fitted_heads_size_must_match_maskgit_condition():
    cfgs = tiny_configs()
    model = LEA(FMRIAutoencoder(cfgs["fmri_autoencoder"]), MaskGITTransformer(cfgs["maskgit"]),
                VQGAN(cfgs["tokenizer"]), handcrafted(dim=FEATURE_DIM + 4), progress=False)
    rng = np.random.default_rng(0)
    with pytest.raises(CheckpointError, match="MaskGIT condition"):
        model.fit_alignment(rng.normal(size=(12, sum(ROI_PATCH))).astype(np.float32), random_images(6),
                            rng.integers(0, 6, 12), AlignConfig())


def test_load_trained_network_round_trip_and_errors(tmp_path):
    cfgs = tiny_configs()
    path = write_model_file(tmp_path / "fmri.pt", "fmri_autoencoder", cfgs["fmri_autoencoder"], seed=3)
    model = load_trained_network("fmri_autoencoder", path)
    torch.manual_seed(3)
    reference = FMRIAutoencoder(cfgs["fmri_autoencoder"])
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="kind"):
        load_trained_network("maskgit", path)
    with pytest.raises(CheckpointError, match="not found"):
        load_trained_network("maskgit", tmp_path / "missing.pt")
    atomic_torch_save(tmp_path / "bare.pt", reference.state_dict())
    with pytest.raises(CheckpointError, match="model file written by train.py"):
        load_trained_network("fmri_autoencoder", tmp_path / "bare.pt")


def test_voxel_count_mismatch_names_both_counts():
    model = FMRIAutoencoder(tiny_configs()["fmri_autoencoder"])
    check_fmri_fits(model, list(ROI_PATCH), "ckpt.pt", "sbj_1")
    with pytest.raises(CheckpointError, match=r"16 voxels.*sbj_1 has 17 voxels"):
        check_fmri_fits(model, [5, 8, 4], "ckpt.pt", "sbj_1")


def test_bf16_decode_runs_and_keeps_shapes(lea):
    lea.dtype = torch.bfloat16
    fmri = np.random.default_rng(5).normal(size=(3, sum(ROI_PATCH))).astype(np.float32)
    out = lea.decode(fmri, SamplingConfig(steps=2, num_samples=1), torch.Generator().manual_seed(0))
    assert out.images.shape == (3, 1, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert lea.encode(random_images(3)).fmri.dtype == np.float32


def test_pixels_to_uint8():
    pixels = to_uint8(torch.tensor([[[[-0.5, 0.5, 1.5]]]]).expand(1, 3, 1, 3))
    assert pixels.shape == (1, 1, 3, 3) and pixels[0, 0, :, 0].tolist() == [0, 128, 255]


def test_generate_images_from_features_is_decode_after_alignment(lea):
    """decode = fMRI -> predicted features -> generate_images; the same seed gives the same images."""
    fmri = np.random.default_rng(3).normal(size=(3, sum(ROI_PATCH))).astype(np.float32)
    sampling = SamplingConfig(num_samples=2, steps=2)
    decoded = lea.decode(fmri, sampling, generator=torch.Generator().manual_seed(7))
    again = lea.generate_images(decoded.features, sampling, generator=torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(again, decoded.images)
    assert again.shape == (3, 2, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_tokenizer_round_trip_is_encode_then_decode(lea):
    images = random_images(5, size=IMAGE_SIZE)
    out = lea.tokenizer_round_trip(images)
    assert out.shape == images.shape and out.dtype == np.uint8
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        _, indices = lea.tokenizer.encode(x)
        expected = to_uint8(lea.tokenizer.decode_indices(indices))
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1   # channels_last may round differently


def test_tokenizer_round_trip_resizes_stimuli_as_the_tokenizer_was_trained(lea):
    """Stimuli larger than the tokenizer's resolution (say recorded 256-pixel stimuli and a 64-pixel
    tokenizer) reach it resized by tokenizer_input, as in its training and MaskGIT's tokens, and come
    back at its resolution; the bicubic resize of the evaluation's ground truth gives other pixels."""
    stimuli = random_images(4, size=4 * IMAGE_SIZE)
    out = lea.tokenizer_round_trip(stimuli)
    assert out.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
    with torch.no_grad():
        _, indices = lea.tokenizer.encode(tokenizer_input(stimuli, IMAGE_SIZE))
        expected = to_uint8(lea.tokenizer.decode_indices(indices))
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    bicubic = resize_images(stimuli, (IMAGE_SIZE, IMAGE_SIZE))
    assert np.abs(tokenizer_input(stimuli, IMAGE_SIZE).numpy() * 255.0
                  - np.moveaxis(bicubic, -1, 1)).max() > 1             # the two resizes differ on these images
