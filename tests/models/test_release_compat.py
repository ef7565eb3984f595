"""Our three networks against the authors' release.

- Names and shapes: at the paper configs (built on the meta device) each module's state dict has
  exactly the keys and shapes listed in `spec/release_state_dict_keys.txt`, and a state dict with
  those names loads with strict=True.
- Numbers: tiny configs loaded strictly from `spec/release_golden.pt` reproduce the outputs that the
  release's modules produced, to 1e-5 in float32.

The spec folder is looked up in $LEA_SPEC_DIR, then `spec/` and `tests/spec/` in the repository, then
`../shared/spec` beside it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from models.fmri_autoencoder import FMRIAutoencoder, FMRIAutoencoderConfig
from models.maskgit import MaskGITConfig, MaskGITTransformer
from models.vqgan import VQGAN, VQGANConfig
from tests.paths import REPO

KEYS_FILE = "release_state_dict_keys.txt"
GOLDEN_FILE = "release_golden.pt"
ATOL = 1e-5
META = torch.device("meta")


def _spec_dir() -> Path | None:
    candidates = [os.environ.get("LEA_SPEC_DIR"), REPO / "spec", REPO / "tests" / "spec",
                  REPO.parent / "shared" / "spec"]
    for c in candidates:
        if c and (Path(c) / KEYS_FILE).is_file() and (Path(c) / GOLDEN_FILE).is_file():
            return Path(c)
    return None


SPEC_DIR = _spec_dir()
pytestmark = pytest.mark.skipif(SPEC_DIR is None, reason=f"{KEYS_FILE} / {GOLDEN_FILE} not found "
                                "(set LEA_SPEC_DIR to the folder holding them)")


def parse_key_sections(path: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """`## <title>` headers, each followed by `NAME [d0, d1, ...]` lines -> {title: {name: shape}}."""
    sections: dict[str, dict[str, tuple[int, ...]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:], {})
        elif line.strip() and not line.startswith("#"):
            name, shape = re.fullmatch(r"(\S+) \[([\d, ]*)\]", line.strip()).groups()
            current[name] = tuple(int(d) for d in shape.split(",") if d.strip())
    return sections


def _section(sections, prefix: str) -> dict[str, tuple[int, ...]]:
    matches = [v for k, v in sections.items() if k.startswith(prefix)]
    assert len(matches) == 1, f"expected one section starting with {prefix!r}"
    return matches[0]


def _paper_models():
    """(section prefix, module at the paper config built on the meta device)."""
    with META:
        return [
            ("fMRI autoencoder - configs/fMRI_TransAE_GOD.yaml",
             FMRIAutoencoder(FMRIAutoencoderConfig(roi_patch=(757, 727, 603, 416, 372, 124, 576, 829)))),
            ("fMRI autoencoder - configs/fMRI_TransAE_BOLD.yaml",
             FMRIAutoencoder(FMRIAutoencoderConfig(roi_patch=(495, 180, 370, 84)))),
            ("MaskGIT token transformer", MaskGITTransformer(MaskGITConfig())),
            ("MaskGIT VQGAN tokenizer", VQGAN(VQGANConfig())),
        ]


@pytest.fixture(scope="module")
def key_sections():
    return parse_key_sections(SPEC_DIR / KEYS_FILE)


@pytest.fixture(scope="module")
def golden():
    return torch.load(SPEC_DIR / GOLDEN_FILE, weights_only=True)


def test_key_file_has_four_sections(key_sections):
    assert len(key_sections) == 4
    counts = [int(re.search(r"(\d+) tensors", title).group(1)) for title in key_sections]
    assert counts == [len(v) for v in key_sections.values()]


@pytest.mark.parametrize("index", range(4))
def test_paper_config_state_dict_matches_release(key_sections, index):
    prefix, model = _paper_models()[index]
    expected = _section(key_sections, prefix)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {k: s for k, s in ours.items() if expected[k] != s} == {}
    release_like = {k: torch.empty(shape, device=META) for k, shape in expected.items()}
    model.load_state_dict(release_like, strict=True, assign=True)


def test_strict_load_rejects_a_missing_key(key_sections):
    prefix, model = _paper_models()[2]
    expected = dict(_section(key_sections, prefix))
    expected.pop("mlps_bias")
    with pytest.raises(RuntimeError, match="mlps_bias"):
        model.load_state_dict({k: torch.empty(s, device=META) for k, s in expected.items()},
                              strict=True, assign=True)


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str):
    assert ours.shape == theirs.shape, what
    err = (ours - theirs).abs().max().item()
    assert err <= ATOL, f"{what}: max abs error {err:.3g}"


def test_golden_fmri_autoencoder(golden):
    g = golden["fmri_autoencoder"]
    model = FMRIAutoencoder(FMRIAutoencoderConfig.from_release_config(g["config"])).eval()
    model.load_state_dict(g["state_dict"], strict=True)
    with torch.no_grad():
        latent, reconstruction = model(g["fmri"])
        from_latent = model.decode(g["latent"])
    _assert_close(latent, g["latent"], "latent")
    _assert_close(reconstruction, g["reconstruction"], "reconstruction")
    _assert_close(from_latent, g["reconstruction"], "decode(golden latent)")


def test_golden_maskgit_transformer(golden):
    g = golden["maskgit_transformer"]
    model = MaskGITTransformer(MaskGITConfig.from_release_config(g["config"])).eval()
    model.load_state_dict(g["state_dict"], strict=True)
    assert model.mask_token_id == int(g["mask_token_id"])
    assert (g["token_ids"] == model.mask_token_id).any(), "golden input should exercise the mask id"
    with torch.no_grad():
        logits = model(g["token_ids"], g["condition"])
    _assert_close(logits, g["logits"], "logits")


def test_golden_vqgan(golden):
    g = golden["vqgan"]
    model = VQGAN(VQGANConfig.from_release_config(g["config"])).eval()
    model.load_state_dict(g["state_dict"], strict=True)
    with torch.no_grad():
        quant, indices = model.encode(g["image"])
        decoded = model.decode(quant)
        from_indices = model.decode_indices(g["indices"])
    assert torch.equal(indices, g["indices"])
    _assert_close(quant, g["quantized"], "quantized")
    _assert_close(decoded, g["decoded"], "decoded")
    _assert_close(from_indices, g["decoded"], "decode_indices")


def test_paper_configs_run_end_to_end_on_meta():
    """Shapes through the full-size networks (meta tensors: no memory, no arithmetic)."""
    (_, god), (_, bold), (_, maskgit), (_, vqgan) = _paper_models()
    latent, reconstruction = god(torch.empty(2, 1, 4404, device=META))
    assert latent.shape == (2, 1, 1024) and reconstruction.shape == (2, 1, 4404)
    assert bold.decode(torch.empty(2, 1024, device=META)).shape == (2, 1, 1129)
    ids = torch.zeros(2, 256, dtype=torch.long, device=META)
    assert maskgit(ids, torch.empty(2, 1024, device=META)).shape == (2, 256, 1024)
    quant, indices = vqgan.encode(torch.empty(2, 3, 256, 256, device=META))
    assert quant.shape == (2, 256, 16, 16) and indices.shape == (2, 16, 16)
    assert vqgan.decode_indices(indices).shape == (2, 3, 256, 256)
