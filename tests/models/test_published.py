"""Published and released weights: MaskGIT's ImageNet transformer in both namings, the published
tokenizer read without a config, the release's DataParallel files; synthetic files carry the
published names and shapes at small sizes. The paper decoder configs build at full size on `meta`."""
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoints import LoadReport
from models.maskgit import MaskGITConfig, MaskGITTransformer
from models.published import (CONDITION_PREFIX, RELEASE_DECODER_PARTS, flax_transformer_names,
                              load_frozen_tokenizer, load_imagenet_transformer, release_parts,
                              vqgan_config_from_state)
from models.vqgan import VQGAN, VQGANConfig
from utils.config import load_config
from utils.errors import CheckpointError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_MASKGIT = MaskGITConfig(num_codebook=16, token_grid=4, embed_dim=24, depth=2, num_heads=3, drop_rate=0.0,
                             condition_dim=8, extra_tokens=10)
TINY_VQGAN = VQGANConfig(resolution=16, ch_base=32, ch_mult=(1, 2, 2), num_res_blocks=2, num_res_mids=1,
                         ch_latent=8, num_codebook=16, dim_codebook=8)


def imagenet_model(seed: int = 0) -> MaskGITTransformer:
    """Stands for the published class-conditional model (our names): random but distinct weights."""
    torch.manual_seed(seed)
    model = MaskGITTransformer(TINY_MASKGIT).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def to_flax_tree(model: MaskGITTransformer) -> dict[str, np.ndarray]:
    """Google's Flax layout of `model`, written out from the published module's shapes (spec 7)."""
    c = model.config
    heads, head_dim = c.num_heads, c.embed_dim // c.num_heads
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    tree = {}
    for ours, (flax, how) in flax_transformer_names(c.depth).items():
        w = sd[ours]
        if how == "dense":
            w = w.T                                                  # [out, in] -> [in, out]
        elif how == "heads_in":
            w = w.T.reshape(c.embed_dim, heads, head_dim)            # [C, H, D]
        elif how == "heads_bias":
            w = w.reshape(heads, head_dim)                           # [H, D]
        elif how == "heads_out":
            w = w.T.reshape(heads, head_dim, c.embed_dim)            # [H, D, C]
        tree[f"params/{flax}"] = np.ascontiguousarray(w)
    return tree


def forward(model, tokens, cond):
    with torch.no_grad():
        return model(tokens, cond)


def inputs():
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, TINY_MASKGIT.vocab_size, (2, TINY_MASKGIT.num_tokens), generator=g)
    return tokens, torch.randn(2, TINY_MASKGIT.condition_dim, generator=g)


def check_taken(model: MaskGITTransformer, ref: MaskGITTransformer, report: LoadReport) -> None:
    fresh = MaskGITTransformer(TINY_MASKGIT).state_dict()
    for key, value in model.state_dict().items():
        if key.startswith(CONDITION_PREFIX):
            assert not torch.equal(value, ref.state_dict()[key])
        else:
            assert torch.equal(value, ref.state_dict()[key]), key
    assert {k for k, _, _ in report.new} == {"decoder_embed.weight", "decoder_embed.bias"}
    assert len(report.taken) == len(fresh) - 2
    table = report.table()
    assert "new" in table and "decoder_embed.weight" in table and "condition projection" in table


@pytest.mark.parametrize("wrapped", [False, True])
def test_imagenet_transformer_release_names(tmp_path, wrapped):
    ref = imagenet_model()
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith(CONDITION_PREFIX)}
    if wrapped:  # DataParallel-saved, inside {'model': ...}
        state = {"model": {f"module.{k}": v for k, v in state.items()}}
    torch.save(state, tmp_path / "imagenet.pth")
    model = MaskGITTransformer(TINY_MASKGIT)
    report = load_imagenet_transformer(tmp_path / "imagenet.pth", model)
    check_taken(model, ref, report)


def test_imagenet_transformer_flax_tree_gives_the_same_network(tmp_path):
    ref = imagenet_model()
    tree = to_flax_tree(ref)
    tree["opt_state/step"] = np.zeros(())  # non-parameter entries are listed as ignored
    np.savez(tmp_path / "maskgit_imagenet256.npz", **tree)
    model = MaskGITTransformer(TINY_MASKGIT).eval()
    report = load_imagenet_transformer(tmp_path / "maskgit_imagenet256.npz", model)
    check_taken(model, ref, report)
    assert [k for k, _, _ in report.ignored] == ["opt_state/step"]
    model.decoder_embed.load_state_dict(ref.decoder_embed.state_dict())
    tokens, cond = inputs()
    torch.testing.assert_close(forward(model, tokens, cond), forward(ref, tokens, cond), rtol=0, atol=0)


def test_imagenet_transformer_flax_shapes_of_the_published_config():
    """Spec 7's names and shapes at the paper size: 24 layers, 768 wide, 16 heads of 48, vocab 2025."""
    model = torch.device("meta")
    with model:
        ref = MaskGITTransformer(MaskGITConfig())
    names = flax_transformer_names(24)
    shapes = {flax: list(ref.state_dict()[ours].shape) for ours, (flax, _) in names.items()}
    assert shapes["Embed_0/word_embeddings/embedding"] == [2025, 768]
    assert shapes["Embed_0/position_embeddings/embedding"] == [257, 768]
    assert shapes["MlmLayer_0/mlm_bias/bias"] == [2025]
    assert len(names) == len(ref.state_dict()) - 2  # everything but decoder_embed.{weight,bias}


def test_imagenet_transformer_errors_list_keys_with_shapes(tmp_path):
    ref = imagenet_model()
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith(CONDITION_PREFIX)}
    del state["mlps_bias"]
    state["token_emb.weight"] = torch.zeros(5, 24)
    torch.save(state, tmp_path / "bad.pth")
    model = MaskGITTransformer(TINY_MASKGIT)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_imagenet_transformer(tmp_path / "bad.pth", model)
    msg = str(err.value)
    assert "bad.pth" in msg and "missing     mlps_bias" in msg and "[5, 24] vs model [27, 24]" in msg
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing loaded

    tree = to_flax_tree(ref)
    tree["params/TransformerLayer_0/Attention_0/self_attention/query/kernel"] = np.zeros((24, 4, 6), np.float32)
    tree["params/TransformerLayer_5/Mlp_0/layer_output/bias"] = np.zeros(24, np.float32)
    del tree["params/MlmLayer_0/mlm_ln/scale"]
    np.savez(tmp_path / "bad.npz", **tree)
    with pytest.raises(CheckpointError) as err:
        load_imagenet_transformer(tmp_path / "bad.npz", model)
    msg = str(err.value)
    assert "Flax 'TransformerLayer_0/Attention_0/self_attention/query/kernel' [24, 4, 6] vs expected [24, 3, 8]" in msg
    assert "MlmLayer_0/mlm_ln/scale' not in the file" in msg and "TransformerLayer_5" in msg
    with pytest.raises(CheckpointError, match="Init.transformer"):
        load_imagenet_transformer(tmp_path / "none.npz", model)


def test_published_tokenizer_needs_no_config(tmp_path):
    torch.manual_seed(0)
    ref = VQGAN(TINY_VQGAN)
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, tmp_path / "tok.pth")
    assert vqgan_config_from_state(ref.state_dict(), 4, "x") == TINY_VQGAN
    vqgan, what = load_frozen_tokenizer(tmp_path / "tok.pth", token_grid=4)
    assert "published tokenizer" in what and vqgan.config == TINY_VQGAN
    assert not any(p.requires_grad for p in vqgan.parameters()) and not vqgan.training
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in vqgan.state_dict().items())
    torch.save({"encoder.conv_in.weight": torch.zeros(3)}, tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="junk.pth.*release's names"):
        load_frozen_tokenizer(tmp_path / "junk.pth", token_grid=4)


def test_release_files_split_by_prefix_and_refuse_strays(tmp_path):
    payload = {"model": {"module.transformer.a": torch.zeros(2), "module.vqgan.b": torch.zeros(3)}}
    parts = release_parts(payload, "dec.pth", RELEASE_DECODER_PARTS)
    assert set(parts["transformer."]) == {"a"} and set(parts["vqgan."]) == {"b"}
    with pytest.raises(CheckpointError) as err:
        release_parts({"model": {"module.transformer.a": torch.zeros(2), "module.head.c": torch.zeros(4, 5)}},
                      "dec.pth", RELEASE_DECODER_PARTS)
    assert "unexpected  head.c  checkpoint [4, 5]" in str(err.value) and "vqgan." in str(err.value)


@pytest.mark.parametrize("name", ["MaskGIT_GOD.yaml", "MaskGIT_BOLD.yaml"])
def test_paper_decoder_configs_build_at_full_size_on_meta(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.init.transformer and cfg.init.tokenizer and not cfg.init.checkpoint
    assert cfg.train.lr == 5e-5 and cfg.train.max_steps == 300_000 and cfg.train.warmup_steps == 20_000
    assert cfg.train.batch_size == 8 and cfg.train.grad_clip is None and cfg.features.normalize
    assert len(cfg.data.subjects) == (5 if cfg.data.dataset == "GOD" else 4)
    with torch.device("meta"):
        model = MaskGITTransformer(cfg.model)
        vqgan = VQGAN(VQGANConfig())
    assert list(model.token_emb.weight.shape) == [2025, 768] and list(model.de_pos_emb.weight.shape) == [257, 768]
    assert vqgan.config.token_grid == cfg.model.token_grid and vqgan.config.num_codebook == cfg.model.num_codebook



@pytest.mark.parametrize("short", ["GOD", "BOLD"])
def test_paper_configs_chain(short):
    """Each LEA config names where its dataset's training configs write (train.py runs are
    `<Train.out_dir>/<run name>_<date-time>/`; the fMRI run name is `<NAME>-<subject>`)."""
    lea = load_config(CONFIGS / f"LEA_{short}.yaml")
    fmri = load_config(CONFIGS / f"fMRI_TransAE_{short}.yaml")
    decoder = load_config(CONFIGS / f"MaskGIT_{short}.yaml")
    assert Path(lea.checkpoints.fmri) == Path(fmri.train.out_dir) / f"{fmri.name}-{{subject}}"
    assert Path(lea.checkpoints.maskgit) == Path(decoder.train.out_dir) / decoder.name
    assert lea.checkpoints.tokenizer == decoder.init.tokenizer
    assert Path(lea.checkpoints.fmri_config).name == f"fMRI_TransAE_{short}.yaml"
    assert Path(lea.checkpoints.maskgit_config).name == f"MaskGIT_{short}.yaml"
    assert Path(lea.checkpoints.align).name == "align.pt" and "{subject}" in lea.checkpoints.align
    assert lea.data.dataset == fmri.data.dataset == decoder.data.dataset
    assert lea.features.dim == decoder.features.dim and lea.features.normalize == decoder.features.normalize
    assert lea.features.backend == decoder.features.backend and lea.features.model == decoder.features.model


def test_published_tokenizer_flax_tree(tmp_path):
    """The Flax tree has no config: the published architecture by default, or a Model section."""
    from tests.models.test_checkpoints import tiny_flax_names, tiny_vqgan_config, to_flax_tree as vqgan_flax_tree

    torch.manual_seed(0)
    ref = VQGAN(tiny_vqgan_config())
    np.savez(tmp_path / "tok.npz", **vqgan_flax_tree(ref.state_dict(), tiny_flax_names()))
    arch = {k: v for k, v in vars(tiny_vqgan_config()).items() if k != "resolution"}
    vqgan, what = load_frozen_tokenizer(tmp_path / "tok.npz", token_grid=8, model_config=arch)
    assert "Flax" in what and vqgan.config.resolution == 16 and not vqgan.training
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in vqgan.state_dict().items())
    with pytest.raises(CheckpointError, match="tok.npz: Flax tokenizer tree does not fit"):
        load_frozen_tokenizer(tmp_path / "tok.npz", token_grid=16)   # the published 256 px architecture


def test_imagenet_transformer_leaves_the_adaln_condition_path_new(tmp_path):
    """With `condition: adaln` the per-layer modulations are listed as new and keep their zero start;
    every ImageNet weight is still taken."""
    ref = imagenet_model()
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith(CONDITION_PREFIX)}
    torch.save(state, tmp_path / "imagenet.pth")
    model = MaskGITTransformer(MaskGITConfig(**{**vars(TINY_MASKGIT), "condition": "adaln"}))
    report = load_imagenet_transformer(tmp_path / "imagenet.pth", model)
    new = {k for k, _, _ in report.new}
    assert new == {"decoder_embed.weight", "decoder_embed.bias"} | {
        f"decoder.{i}.modulation.1.{p}" for i in range(TINY_MASKGIT.depth) for p in ("weight", "bias")}
    assert {k for k, _ in report.taken} == set(state)
    assert all(not model.state_dict()[k].any() for k in new if ".modulation." in k)
    assert "per-layer condition modulation" in report.table()
