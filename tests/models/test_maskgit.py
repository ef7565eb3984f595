"""Conditional MaskGIT transformer and iterative decoding."""
from __future__ import annotations

import math

import pytest
import torch

from models.maskgit import MaskGITConfig, MaskGITTransformer, mask_schedule
from utils.errors import ConfigError, DataError

NUM_CODEBOOK = 12
GRID = 4
N = GRID * GRID
COND_DIM = 16  # >= NUM_CODEBOOK for the toy forward below


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = MaskGITConfig(num_codebook=NUM_CODEBOOK, token_grid=GRID, embed_dim=32, depth=2, num_heads=4,
                           drop_rate=0.0, condition_dim=COND_DIM, extra_tokens=5)
    return MaskGITTransformer(config).eval()


def test_paper_config_ids():
    c = MaskGITConfig()
    assert c.mask_token_id == 2024 and c.vocab_size == 2025 and c.num_tokens == 256


def test_forward_shape_and_condition_use(model):
    ids = torch.randint(0, NUM_CODEBOOK, (3, N))
    ids[:, ::3] = model.mask_token_id
    cond = torch.randn(3, COND_DIM)
    logits = model(ids, cond)
    assert logits.shape == (3, N, NUM_CODEBOOK)
    assert not torch.allclose(model(ids, cond + 1.0), logits)


def test_logits_are_tied_to_the_token_embedding(model):
    """The last codebook entry's logit moves with its embedding row and with mlps_bias."""
    ids, cond = torch.randint(0, NUM_CODEBOOK, (1, N)), torch.randn(1, COND_DIM)
    before = model(ids, cond)
    with torch.no_grad():
        model.mlps_bias[NUM_CODEBOOK - 1] += 2.0
        model.mlps_bias[NUM_CODEBOOK:] += 100.0  # ids outside the codebook are not returned
    after = model(ids, cond)
    torch.testing.assert_close(after[..., -1], before[..., -1] + 2.0)
    torch.testing.assert_close(after[..., :-1], before[..., :-1])


def test_bad_inputs_are_clear_errors(model):
    with pytest.raises(DataError, match="token_ids"):
        model(torch.zeros(2, N + 1, dtype=torch.long), torch.randn(2, COND_DIM))
    with pytest.raises(DataError, match="condition"):
        model(torch.zeros(2, N, dtype=torch.long), torch.randn(2, COND_DIM + 1))


def test_initialisation(model):
    assert model.token_emb.weight.abs().max() <= 0.04 + 1e-6  # truncated at 2 std
    assert model.token_emb.weight.std().item() == pytest.approx(0.02 * 0.88, rel=0.2)
    assert torch.all(model.decoder[0].linear1.bias == 0) and torch.all(model.mlps_bias == 0)
    assert model.decoder[0].norm1.eps == 1e-12 and model.ln.eps == 1e-5


def test_mask_schedule():
    cosine = mask_schedule("cosine")
    assert cosine(0.0) == 1.0 and cosine(1.0) == pytest.approx(0.0, abs=1e-12)
    assert cosine(0.5) == pytest.approx(math.cos(math.pi / 4))
    torch.testing.assert_close(cosine(torch.tensor([0.0, 0.5])), torch.tensor([1.0, math.cos(math.pi / 4)]))
    assert mask_schedule("linear")(0.25) == 0.75
    assert mask_schedule("square")(0.5) == 0.75
    with pytest.raises(ConfigError, match="cosine"):
        mask_schedule("exp")


def expected_mask_counts(steps: int, schedule: str = "cosine") -> list[int]:
    """The spec's schedule: floor(N * gamma((t+1)/T)) clipped to [1, #masked - 1], 0 after the last step."""
    gamma, masked, counts = mask_schedule(schedule), N, []
    for t in range(steps - 1):
        masked = max(1, min(masked - 1, math.floor(N * gamma((t + 1) / steps))))
        counts.append(masked)
    return counts + [0]


@pytest.mark.parametrize("steps,schedule", [(11, "cosine"), (5, "linear"), (3, "cosine")])
def test_generate_follows_the_schedule(model, steps, schedule):
    seen = []  # masked tokens in each forward's input
    model.register_forward_pre_hook(lambda m, args: seen.append((args[0] == m.mask_token_id).sum(1).tolist()))
    tokens, history = model.generate(torch.randn(2, COND_DIM), num_samples=2, steps=steps, schedule=schedule,
                                     generator=torch.Generator().manual_seed(0), return_history=True)
    expected = expected_mask_counts(steps, schedule)
    assert history == expected
    assert len(seen) == steps
    assert seen == [[N] * 4] + [[n] * 4 for n in expected[:-1]]
    assert tokens.shape == (2, 2, N) and tokens.dtype == torch.long
    assert tokens.min() >= 0 and tokens.max() < NUM_CODEBOOK


def test_generate_is_reproducible_per_seed(model):
    cond = torch.randn(2, COND_DIM)
    a = model.generate(cond, num_samples=3, generator=torch.Generator().manual_seed(1))
    b = model.generate(cond, num_samples=3, generator=torch.Generator().manual_seed(1))
    c = model.generate(cond, num_samples=3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[:, 0], a[:, 1])  # samples of one condition differ


def test_generate_keeps_tokens_once_unmasked(model):
    """A token revealed at some step is never changed afterwards."""
    inputs = []
    model.register_forward_pre_hook(lambda m, args: inputs.append(args[0].clone()))
    tokens = model.generate(torch.randn(1, COND_DIM), steps=6, generator=torch.Generator().manual_seed(3))
    final = tokens.reshape(1, N)
    for ids in inputs:
        known = ids != model.mask_token_id
        assert torch.equal(ids[known], final[known])


def test_generate_routes_each_condition_to_its_samples(model):
    """With a toy forward whose logits come from the condition, each row decodes to its own code."""
    def toy_forward(token_ids, condition):
        return 50.0 * condition[:, None, :NUM_CODEBOOK].expand(-1, token_ids.shape[1], -1)

    model.forward = toy_forward
    cond = torch.zeros(2, COND_DIM)
    cond[0, 3] = 1.0
    cond[1, 7] = 1.0
    tokens = model.generate(cond, num_samples=3, generator=torch.Generator().manual_seed(0))
    assert torch.all(tokens[0] == 3) and torch.all(tokens[1] == 7)


def test_generate_rejects_bad_arguments(model):
    with pytest.raises(ConfigError, match="steps"):
        model.generate(torch.randn(1, COND_DIM), steps=0)
    with pytest.raises(ConfigError, match="schedule"):
        model.generate(torch.randn(1, COND_DIM), schedule="nope")


def adaln_twin(model: MaskGITTransformer) -> MaskGITTransformer:
    """A freshly initialised `condition: adaln` network of `model`'s size, in eval mode."""
    return MaskGITTransformer(MaskGITConfig(**{**vars(model.config), "condition": "adaln"})).eval()


@pytest.mark.parametrize("condition", ["prefix", "adaln"])
def test_bf16_autocast(model, condition):
    if condition == "adaln":
        model = adaln_twin(model)
        with torch.no_grad():
            for layer in model.decoder:
                layer.modulation[-1].weight.normal_(std=0.1)
    ids, cond = torch.randint(0, NUM_CODEBOOK, (2, N)), torch.randn(2, COND_DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids, cond)
        tokens = model.generate(cond, steps=3, generator=torch.Generator().manual_seed(0))
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), model(ids, cond), atol=0.1, rtol=0.1)
    assert tokens.max() < NUM_CODEBOOK


def test_release_config_names():
    release = {"Model": {"resolution": 64, "patch_size": 16, "decoder_embed_dim": 64, "decoder_depth": 2,
                         "num_heads": 4, "drop_rate": 0.0, "num_codebook": 64}}
    c = MaskGITConfig.from_release_config(release)
    assert (c.token_grid, c.embed_dim, c.depth, c.mask_token_id) == (4, 64, 2, 1064)
    release["Model"]["patch_size"] = 15
    with pytest.raises(ConfigError, match="patch_size"):
        MaskGITConfig.from_release_config(release)


def test_guidance_scale_zero_is_the_unguided_path(model):
    cond = torch.randn(3, COND_DIM)
    plain = model.generate(cond, num_samples=2, steps=4, generator=torch.Generator().manual_seed(5))
    zero = model.generate(cond, num_samples=2, steps=4, generator=torch.Generator().manual_seed(5),
                          guidance_scale=0.0)
    assert torch.equal(plain, zero)
    ids = torch.randint(0, NUM_CODEBOOK, (3, N))
    assert torch.equal(model.guided_logits(ids, cond, 0.0), model(ids, cond))


def test_guided_logits_contrast_with_the_null_condition(model):
    cond = torch.randn(3, COND_DIM)
    ids = torch.full((3, N), model.mask_token_id)
    with_cond, null = model(ids, cond), model(ids, torch.zeros_like(cond))
    torch.testing.assert_close(model.guided_logits(ids, cond, 2.0), with_cond + 2.0 * (with_cond - null),
                               atol=1e-5, rtol=1e-5)
    guided = model.generate(cond, num_samples=2, steps=4, generator=torch.Generator().manual_seed(5),
                            guidance_scale=3.0)
    assert guided.shape == (3, 2, N) and int(guided.max()) < NUM_CODEBOOK
    with pytest.raises(ConfigError, match="guidance_scale"):
        model.generate(cond, guidance_scale=-1.0)


def test_adaln_condition_starts_as_the_prefix_model_and_conditions_every_layer(model):
    """`condition: adaln` adds only `decoder.<i>.modulation.*`, initialised to zero (the same network
    as the prefix model at first); once trained, the condition reaches every layer's norms."""
    adaln = adaln_twin(model)
    extra = set(adaln.state_dict()) - set(model.state_dict())
    assert extra == {f"decoder.{i}.modulation.1.{p}" for i in range(2) for p in ("weight", "bias")}
    assert all(not adaln.state_dict()[k].any() for k in extra)
    adaln.load_state_dict({**adaln.state_dict(), **model.state_dict()})
    ids, cond = torch.randint(0, NUM_CODEBOOK, (3, N)), torch.randn(3, COND_DIM)
    assert torch.equal(adaln(ids, cond), model(ids, cond))

    # One layer, the same input: with non-zero modulation its output follows the condition.
    layer = adaln.decoder[0]
    x = torch.randn(3, N + 1, 32)
    with torch.no_grad():
        layer.modulation[-1].weight.normal_()
    c = adaln.decoder_embed(cond)
    assert not torch.allclose(layer(x, c), layer(x, c + 1.0))
    assert torch.allclose(model.decoder[0](x), model.decoder[0](x, c + 1.0))  # prefix layers ignore it
    with pytest.raises(ConfigError, match="condition"):
        MaskGITConfig(condition="cross")
