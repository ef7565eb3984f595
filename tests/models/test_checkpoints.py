"""Safe, strict checkpoint loading: MinD-Vis fMRI encoder, MaskGIT tokenizer (Flax tree or
PyTorch), release files; every error path names the file and the offending keys."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoints import (LoadReport, convert_mindvis_state, interpolate_pos_embed, load_maskgit_vqgan,
                                load_mindvis_fmri_encoder, load_release_checkpoint, load_state_dict_strict,
                                safe_torch_load)
from models.fmri_autoencoder import FMRIAutoencoder, FMRIAutoencoderConfig
from models.layers import sincos_positions_1d
from models.vqgan import VQGAN, VQGANConfig
from utils.errors import CheckpointError

META = torch.device("meta")
MINDVIS_PATCH = 16                    # voxels per MinD-Vis patch (Conv1d kernel = stride)


# ---------------------------------------------------------------------------
# safe_torch_load
# ---------------------------------------------------------------------------

def _leave_marker(path):
    Path(path).write_text("code ran")
    return 0


class Payload:
    """Unpickling this object would call _leave_marker: a stand-in for malicious code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_leave_marker, (str(self.marker),))


def test_missing_file_names_path_and_hint(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pth: checkpoint file not found; get it here"):
        safe_torch_load(tmp_path / "nope.pth", hint="get it here")


def test_unsafe_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "marker.txt"
    torch.save({"model": {"w": torch.ones(1)}, "evil": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load.*_leave_marker"):
        safe_torch_load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_corrupt_and_safetensors_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        safe_torch_load(tmp_path / "junk.pt")
    from safetensors.torch import save_file
    save_file({"a": torch.arange(3.0)}, str(tmp_path / "w.safetensors"))
    assert torch.equal(safe_torch_load(tmp_path / "w.safetensors")["a"], torch.arange(3.0))


# ---------------------------------------------------------------------------
# Strict loading and release files
# ---------------------------------------------------------------------------

def tiny_vqgan_config():
    return VQGANConfig(resolution=16, ch_base=32, ch_mult=(1, 2), num_res_blocks=1, num_res_mids=1,
                       ch_latent=32, dim_codebook=32, num_codebook=16)


def test_load_state_dict_strict_lists_every_problem():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    state = dict(model.state_dict())
    state["0.weight"] = torch.zeros(5, 3)
    del state["1.bias"]
    state["extra"] = torch.zeros(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(model, state, "ckpt.pt")
    msg = str(err.value)
    assert "ckpt.pt" in msg and "3 problems" in msg
    assert "0.weight  checkpoint [5, 3] vs model [4, 3]" in msg
    assert "missing     1.bias  model [2]" in msg and "unexpected  extra" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing loaded


@pytest.mark.parametrize("wrap", ["model", "bare", "module"])
def test_release_checkpoint_round_trip(tmp_path, wrap):
    torch.manual_seed(0)
    src = VQGAN(tiny_vqgan_config())
    state = src.state_dict()
    payload = {"model": state} if wrap == "model" else (
        state if wrap == "bare" else {f"module.{k}": v for k, v in state.items()})
    torch.save(payload, tmp_path / "vq.pt")
    dst = VQGAN(tiny_vqgan_config())
    report = load_release_checkpoint(tmp_path / "vq.pt", dst)
    assert len(report.taken) == len(state)
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in state.items())


def test_release_checkpoint_shape_mismatch_and_not_a_state_dict(tmp_path):
    torch.save({"model": VQGAN(tiny_vqgan_config()).state_dict()}, tmp_path / "vq.pt")
    wide = VQGAN(VQGANConfig(**{**tiny_vqgan_config().__dict__, "num_codebook": 32}))
    with pytest.raises(CheckpointError, match=r"quantizer\.embedding\.weight  checkpoint \[16, 32\] vs model \[32, 32\]"):
        load_release_checkpoint(tmp_path / "vq.pt", wide)
    torch.save({"epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt.*state dict"):
        load_release_checkpoint(tmp_path / "other.pt", wide)


# ---------------------------------------------------------------------------
# MinD-Vis fmri_encoder.pth
# ---------------------------------------------------------------------------

def tiny_fmri_config(**kw):
    base = dict(roi_patch=(20, 12), patch_size=4, embed_dim=32, encoder_depth=2, num_heads=4,
                decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=4, latent_dim=32)
    return FMRIAutoencoderConfig(**{**base, **kw})


def mindvis_state(embed_dim=32, depth=2, decoder_dim=16, decoder_depth=1, n_patches=5, device=None):
    """Keys and shapes of MinD-Vis's MAE for fMRI (timm blocks, mlp_ratio 1.0)."""
    def block(prefix, c):
        return {f"{prefix}.norm1.weight": [c], f"{prefix}.norm1.bias": [c],
                f"{prefix}.attn.qkv.weight": [3 * c, c], f"{prefix}.attn.qkv.bias": [3 * c],
                f"{prefix}.attn.proj.weight": [c, c], f"{prefix}.attn.proj.bias": [c],
                f"{prefix}.norm2.weight": [c], f"{prefix}.norm2.bias": [c],
                f"{prefix}.mlp.fc1.weight": [c, c], f"{prefix}.mlp.fc1.bias": [c],
                f"{prefix}.mlp.fc2.weight": [c, c], f"{prefix}.mlp.fc2.bias": [c]}
    shapes = {"cls_token": [1, 1, embed_dim], "pos_embed": [1, n_patches + 1, embed_dim],
              "patch_embed.proj.weight": [embed_dim, 1, MINDVIS_PATCH], "patch_embed.proj.bias": [embed_dim]}
    for i in range(depth):
        shapes.update(block(f"blocks.{i}", embed_dim))
    shapes.update({"norm.weight": [embed_dim], "norm.bias": [embed_dim],
                   "decoder_embed.weight": [decoder_dim, embed_dim], "decoder_embed.bias": [decoder_dim],
                   "mask_token": [1, 1, decoder_dim], "decoder_pos_embed": [1, n_patches + 1, decoder_dim]})
    for i in range(decoder_depth):
        shapes.update(block(f"decoder_blocks.{i}", decoder_dim))
    shapes.update({"decoder_norm.weight": [decoder_dim], "decoder_norm.bias": [decoder_dim],
                   "decoder_pred.weight": [MINDVIS_PATCH, decoder_dim], "decoder_pred.bias": [MINDVIS_PATCH]})
    if device == META:
        return {k: torch.empty(s, device=META) for k, s in shapes.items()}
    g = torch.Generator().manual_seed(7)
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


CONFIG_MODULE = '''
class Config_MAE_fMRI:
    pass

class Config_MBM_fMRI(Config_MAE_fMRI):
    def __init__(self):
        self.lr = 2.5e-4
        self.mask_ratio = 0.75
        self.patch_size = 16
        self.embed_dim = {embed_dim}
        self.decoder_embed_dim = 16
        self.depth = 2
        self.num_heads = 4
        self.mlp_ratio = 1.0
        self.root_path = '.'
        self.num_sub_limit = None

class Other:
    pass
'''


@pytest.fixture
def write_mindvis(tmp_path, monkeypatch):
    """Writes a MinD-Vis-style fmri_encoder.pth whose config is pickled from a module named `config`."""
    def write(state, embed_dim=32, config_class="Config_MBM_fMRI", name="fmri_encoder.pth"):
        pkg = tmp_path / f"pkg_{name}"
        pkg.mkdir()
        (pkg / "config.py").write_text(CONFIG_MODULE.format(embed_dim=embed_dim))
        monkeypatch.syspath_prepend(str(pkg))
        monkeypatch.delitem(sys.modules, "config", raising=False)
        import config
        optimizer = {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(2)}},
                     "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.95), "params": [0]}]}
        torch.save({"model": state, "optimizer": optimizer, "epoch": 499,
                    "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 10},
                    "config": getattr(config, config_class)()}, tmp_path / name)
        monkeypatch.delitem(sys.modules, "config")   # the loader must not rely on it
        return tmp_path / name
    return write


def test_mindvis_load_carries_shared_weights(write_mindvis):
    state = mindvis_state()
    path = write_mindvis(state)
    model = FMRIAutoencoder(tiny_fmri_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_mindvis_fmri_encoder(path, model)
    after = model.state_dict()

    taken = {k for k, _ in report.taken}
    expected_taken = {k for k in state if not k.startswith(("patch_embed.", "decoder_pred.", "pos_embed",
                                                            "decoder_pos_embed"))}
    assert taken == expected_taken
    assert all(torch.equal(after[k], state[k]) for k in taken)
    new = {k for k, _, _ in report.new}
    assert new == set(after) - taken
    assert all(torch.equal(after[k], before[k]) for k in new)          # LEA-only layers untouched
    assert any(k.startswith("patch_embed.layers.0") for k in new) and "pred.weight" in new
    torch.testing.assert_close(after["pos_embed"], sincos_positions_1d(8, 32))
    ignored = {k: s for k, s, _ in report.ignored}
    assert ignored["patch_embed.proj.weight"] == [32, 1, MINDVIS_PATCH]
    assert ignored["decoder_pred.weight"] == [MINDVIS_PATCH, 16]
    assert report.source_config["embed_dim"] == 32 and report.source_config["mask_ratio"] == 0.75
    table = report.table()
    assert "blocks.0.attn.qkv.weight" in table and "[96, 32]" in table and "ignored" in table


def test_mindvis_embed_dim_mismatch_lists_keys_and_loads_nothing(write_mindvis):
    path = write_mindvis(mindvis_state(embed_dim=48, decoder_dim=16), embed_dim=48)
    model = FMRIAutoencoder(tiny_fmri_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_mindvis_fmri_encoder(path, model)
    msg = str(err.value)
    assert "fmri_encoder.pth" in msg and "embed_dim 48" in msg
    assert "blocks.0.attn.qkv.weight  checkpoint [144, 48] vs model [96, 32]" in msg
    assert "cls_token  checkpoint [1, 1, 48] vs model [1, 1, 32]" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_mindvis_depth_mismatch_is_an_error(write_mindvis):
    path = write_mindvis(mindvis_state(depth=3))
    with pytest.raises(CheckpointError, match=r"unexpected  blocks\.2\.norm1\.weight"):
        load_mindvis_fmri_encoder(path, FMRIAutoencoder(tiny_fmri_config()))
    path = write_mindvis(mindvis_state(depth=1), name="shallow.pth")
    with pytest.raises(CheckpointError, match=r"missing     blocks\.1\.norm1\.weight"):
        load_mindvis_fmri_encoder(path, FMRIAutoencoder(tiny_fmri_config()))


def test_mindvis_other_pickled_class_is_refused(write_mindvis):
    path = write_mindvis(mindvis_state(), config_class="Other")
    with pytest.raises(CheckpointError, match=r"refused to load.*config\.Other"):
        load_mindvis_fmri_encoder(path, FMRIAutoencoder(tiny_fmri_config()))


def test_mindvis_interpolated_positions(write_mindvis):
    state = mindvis_state()
    path = write_mindvis(state)
    model = FMRIAutoencoder(tiny_fmri_config())
    report = load_mindvis_fmri_encoder(path, model, positions="interpolate")
    assert ("pos_embed", [1, 9, 32]) in report.taken
    torch.testing.assert_close(model.state_dict()["pos_embed"], interpolate_pos_embed(state["pos_embed"], 8))


def test_mindvis_paper_shapes_fit_paper_model():
    """Published MinD-Vis shapes (1024 wide, 24 blocks; decoder 512 wide, 8 blocks) against the
    paper-size LEA autoencoder, on the meta device."""
    with META:
        model = FMRIAutoencoder(FMRIAutoencoderConfig(roi_patch=(757, 727, 603, 416, 372, 124, 576, 829)))
    source = mindvis_state(1024, 24, 512, 8, n_patches=4656 // MINDVIS_PATCH, device=META)
    report = LoadReport("paper")
    convert_mindvis_state(source, model.state_dict(), report)
    assert len(report.taken) == 2 + 24 * 12 + 2 + 2 + 8 * 12 + 2
    assert ("decoder_embed.weight", [512, 1024]) in report.taken


def test_interpolate_pos_embed():
    pos = torch.cat([torch.full((1, 1, 3), 9.0), torch.linspace(0, 1, 5).view(1, 5, 1).expand(1, 5, 3)], 1)
    out = interpolate_pos_embed(pos, 9)
    assert out.shape == (1, 10, 3) and torch.equal(out[:, 0], pos[:, 0])
    torch.testing.assert_close(out[0, 1:, 0], torch.linspace(0, 1, 9))
    torch.testing.assert_close(interpolate_pos_embed(pos, 5), pos)
    with pytest.raises(CheckpointError):
        interpolate_pos_embed(torch.zeros(5, 3), 4)


# ---------------------------------------------------------------------------
# MaskGIT tokenizer
# ---------------------------------------------------------------------------

def _resblock(prefix, flax, c_in, c_out):
    names = {f"{prefix}.norm1.weight": f"{flax}/GroupNorm_0/scale", f"{prefix}.norm1.bias": f"{flax}/GroupNorm_0/bias",
             f"{prefix}.conv1.weight": f"{flax}/Conv_0/kernel",
             f"{prefix}.norm2.weight": f"{flax}/GroupNorm_1/scale", f"{prefix}.norm2.bias": f"{flax}/GroupNorm_1/bias",
             f"{prefix}.conv2.weight": f"{flax}/Conv_1/kernel"}
    if c_in != c_out:
        names[f"{prefix}.nin_shortcut.weight"] = f"{flax}/Conv_2/kernel"
    return names


def tiny_flax_names():
    """Release key -> Flax path, written out by hand for ch_mult (1, 2), 1 block per level, 1 mid block,
    following MaskGIT's module creation order."""
    names = {"encoder.conv_in.weight": "encoder/Conv_0/kernel",
             "encoder.norm_out.weight": "encoder/GroupNorm_0/scale", "encoder.norm_out.bias": "encoder/GroupNorm_0/bias",
             "encoder.conv_out.weight": "encoder/Conv_1/kernel", "encoder.conv_out.bias": "encoder/Conv_1/bias",
             "decoder.conv_in.weight": "decoder/Conv_0/kernel", "decoder.conv_in.bias": "decoder/Conv_0/bias",
             "decoder.up.0.upsample.conv.weight": "decoder/Conv_1/kernel",
             "decoder.up.0.upsample.conv.bias": "decoder/Conv_1/bias",
             "decoder.norm_out.weight": "decoder/GroupNorm_0/scale", "decoder.norm_out.bias": "decoder/GroupNorm_0/bias",
             "decoder.conv_out.weight": "decoder/Conv_2/kernel", "decoder.conv_out.bias": "decoder/Conv_2/bias",
             "quantizer.embedding.weight": "quantizer/codebook"}
    names.update(_resblock("encoder.down.0.block.0", "encoder/ResBlock_0", 32, 32))
    names.update(_resblock("encoder.down.1.block.0", "encoder/ResBlock_1", 32, 64))
    names.update(_resblock("encoder.mid.0", "encoder/ResBlock_2", 64, 64))
    names.update(_resblock("decoder.mid.0", "decoder/ResBlock_0", 64, 64))
    names.update(_resblock("decoder.up.0.block.0", "decoder/ResBlock_1", 64, 64))
    names.update(_resblock("decoder.up.1.block.0", "decoder/ResBlock_2", 64, 32))
    return names


def to_flax_tree(state, names):
    tree = {}
    for key, flax in names.items():
        value = state[key].numpy()
        tree["params/" + flax] = value.transpose(2, 3, 1, 0) if flax.endswith("/kernel") else value  # OIHW -> HWIO
    return tree


def test_flax_npz_round_trip(tmp_path):
    torch.manual_seed(0)
    src = VQGAN(tiny_vqgan_config())
    names = tiny_flax_names()
    assert set(names) == set(src.state_dict())
    tree = to_flax_tree(src.state_dict(), names)
    tree["opt_state/step"] = np.array(3)
    np.savez(tmp_path / "tok.npz", **tree)
    dst = VQGAN(tiny_vqgan_config())
    report = load_maskgit_vqgan(tmp_path / "tok.npz", dst)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    assert [k for k, _, _ in report.ignored] == ["opt_state/step"]
    image = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(dst.decode(dst.encode(image)[0]), src.decode(src.encode(image)[0]))


def test_flax_npz_errors(tmp_path):
    src = VQGAN(tiny_vqgan_config())
    tree = to_flax_tree(src.state_dict(), tiny_flax_names())
    del tree["params/decoder/ResBlock_2/Conv_2/kernel"]
    tree["params/encoder/Conv_0/kernel"] = np.zeros((3, 3, 3, 8), np.float32)
    np.savez(tmp_path / "bad.npz", **tree)
    with pytest.raises(CheckpointError) as err:
        load_maskgit_vqgan(tmp_path / "bad.npz", VQGAN(tiny_vqgan_config()))
    msg = str(err.value)
    assert "bad.npz" in msg and "decoder.up.1.block.0.nin_shortcut.weight" in msg
    assert "encoder.conv_in.weight  Flax 'encoder/Conv_0/kernel' [3, 3, 3, 8] -> [8, 3, 3, 3] vs model [32, 3, 3, 3]" in msg
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="pickled"):
        load_maskgit_vqgan(tmp_path / "obj.npz", VQGAN(tiny_vqgan_config()))
    with pytest.raises(CheckpointError, match="tokenizer_imagenet256_checkpoint"):
        load_maskgit_vqgan(tmp_path / "absent.npz", VQGAN(tiny_vqgan_config()))


# The published tokenizer tree (names and HWIO shapes of tokenizer_imagenet256_checkpoint), compactly:
# residual blocks as (in, out) channels in creation order, then the plain convolutions.
PUBLISHED_ENCODER_BLOCKS = [(128, 128)] * 4 + [(128, 256)] + [(256, 256)] * 3 + [(256, 512)] + [(512, 512)] * 3
PUBLISHED_DECODER_BLOCKS = [(512, 512)] * 4 + [(512, 256)] + [(256, 256)] * 3 + [(256, 128)] + [(128, 128)] * 3
PUBLISHED_CONVS = {"encoder/Conv_0": (3, 3, 3, 128), "encoder/Conv_1": (1, 1, 512, 256),
                   "decoder/Conv_0": (3, 3, 256, 512), "decoder/Conv_1": (3, 3, 512, 512),
                   "decoder/Conv_2": (3, 3, 256, 256), "decoder/Conv_3": (3, 3, 256, 256),
                   "decoder/Conv_4": (3, 3, 128, 128), "decoder/Conv_5": (3, 3, 128, 3)}
PUBLISHED_CONV_BIAS = ("encoder/Conv_1", "decoder/Conv_0", "decoder/Conv_1", "decoder/Conv_2", "decoder/Conv_3",
                       "decoder/Conv_4", "decoder/Conv_5")


def published_tree_shapes():
    tree = {"quantizer/codebook": (1024, 256), "encoder/GroupNorm_0/scale": (512,),
            "encoder/GroupNorm_0/bias": (512,), "decoder/GroupNorm_0/scale": (128,),
            "decoder/GroupNorm_0/bias": (128,)}
    for net, blocks in (("encoder", PUBLISHED_ENCODER_BLOCKS), ("decoder", PUBLISHED_DECODER_BLOCKS)):
        for k, (c_in, c_out) in enumerate(blocks):
            p = f"{net}/ResBlock_{k}"
            tree.update({f"{p}/GroupNorm_0/scale": (c_in,), f"{p}/GroupNorm_0/bias": (c_in,),
                         f"{p}/Conv_0/kernel": (3, 3, c_in, c_out), f"{p}/GroupNorm_1/scale": (c_out,),
                         f"{p}/GroupNorm_1/bias": (c_out,), f"{p}/Conv_1/kernel": (3, 3, c_out, c_out)})
            if c_in != c_out:
                tree[f"{p}/Conv_2/kernel"] = (1, 1, c_out, c_out)
    for name, shape in PUBLISHED_CONVS.items():
        tree[f"{name}/kernel"] = shape
    tree.update({f"{name}/bias": (PUBLISHED_CONVS[name][-1],) for name in PUBLISHED_CONV_BIAS})
    return tree


def test_published_flax_tree_maps_onto_paper_vqgan():
    """Every entry of the published tree lands on a paper-config VQGAN parameter of the right shape."""
    from models.checkpoints import VQGANLayout, flax_name
    with META:
        target = VQGAN(VQGANConfig()).state_dict()
    published = published_tree_shapes()
    layout = VQGANLayout.from_keys(target)
    mapped = {flax_name(k, layout): k for k in target}
    assert set(mapped) == set(published) and len(mapped) == len(target)
    for flax, key in mapped.items():
        shape = published[flax]
        expected = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape
        assert tuple(target[key].shape) == expected, (flax, key)
