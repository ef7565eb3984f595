"""FID and LPIPS networks built from weight files the user names (nothing is downloaded).

- FID Inception, feature 64 (`--fid-weights`): the stem of the FID Inception-v3
  (`Conv2d_1a_3x3`, `Conv2d_2a_3x3`, `Conv2d_2b_3x3`, 3x3/2 max-pool) whose
  64 channels, averaged over space, are torchmetrics' / torch-fidelity's
  `feature=64`. Weights: the FID Inception file of pytorch-fid or torch-fidelity
  (`pt_inception-2015-12-05-6726825d.pth`, `weights-inception-2015-12-05-6726825d.pth`);
  only the stem's keys are read. Images are resized to 299 px (bilinear) and
  scaled to [-1, 1]; torch-fidelity's own TF1-style resize differs slightly, so
  FID values agree with it to the resize only.
- LPIPS AlexNet (`--lpips-weights ALEXNET,LINEAR`): torchvision's AlexNet
  `features` (`alexnet-owt-7be5be79.pth`) and the LPIPS linear layers
  (`lpips` package `weights/v0.1/alex.pth`, keys `lin{0..4}.model.1.weight`).
  Distance = sum over the 5 ReLU outputs of the spatial mean of
  lin(normalised(f(a)) - normalised(f(b)))^2, inputs scaled to [-1, 1] and
  shifted/scaled by LPIPS's fixed constants.
Every file is read with `torch.load(weights_only=True)`; a missing key or shape
is an error naming the file and the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import CheckpointError, describe

FID_SIZE = 299
FID_STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3")
FID_BN_EPS = 1e-3
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_TAPS = (1, 4, 7, 9, 11)            # AlexNet `features` indices of the 5 ReLU outputs
LPIPS_CHANNELS = (64, 192, 384, 256, 256)
NORM_EPS = 1e-10
FEATURE_BATCH = 32


def _read_state(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(describe(path, f"the {what} weights file", "no such file"))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(describe(path, "a state dict readable with torch.load(weights_only=True)",
                                       f"{type(err).__name__}: {err}")) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(describe(path, "a dict of tensors", type(state).__name__))
    return state


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], prefix: str, path: str | Path) -> None:
    """Copy `prefix + name` of `state` into every parameter and buffer of `module` (shapes checked)."""
    own = module.state_dict()
    picked = {}
    for name, tensor in own.items():
        if name.endswith("num_batches_tracked"):
            picked[name] = tensor
            continue
        key = prefix + name
        if key not in state:
            raise CheckpointError(describe(f"{path} key '{key}'", f"a tensor of shape {list(tensor.shape)}",
                                           "missing"))
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(describe(f"{path} key '{key}'", f"shape {list(tensor.shape)}",
                                           list(state[key].shape)))
        picked[name] = state[key].float()
    module.load_state_dict(picked, strict=True)


class _ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=FID_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class FIDInception64(nn.Module):
    """Images `[B, 3, H, W]` in [0, 1] -> FID Inception features of size 64 `[B, 64]`."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in images.split(FEATURE_BATCH):
            x = F.interpolate(chunk, size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False)
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(2.0 * x - 1.0)))
            x = F.max_pool2d(x, kernel_size=3, stride=2)     # [b, 64, h, w]
            out.append(x.mean(dim=(2, 3)))                     # [b, 64]
        return torch.cat(out)


def load_fid_inception64(path: str | Path) -> FIDInception64:
    model = FIDInception64()
    state = _read_state(path, "FID Inception")
    for name in FID_STEM:
        _load_into(getattr(model, name), state, f"{name}.", path)
    return model.eval()


def _alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())


class LPIPSAlex(nn.Module):
    """LPIPS (AlexNet, v0.1) distance between two image batches `[B, 3, H, W]` in [0, 1] -> `[B]`."""

    def __init__(self):
        super().__init__()
        self.features = _alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((2.0 * x - 1.0) - self.shift) / self.scale
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in LPIPS_TAPS:
                taps.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + NORM_EPS))  # unit length per position
        return taps

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(a.shape[0], device=a.device)
        for lin, fa, fb in zip(self.lins, self._taps(a), self._taps(b)):
            total = total + lin((fa - fb) ** 2).mean(dim=(1, 2, 3))
        return total


def load_lpips_alex(alexnet_path: str | Path, linear_path: str | Path) -> LPIPSAlex:
    model = LPIPSAlex()
    _load_into(model.features, _read_state(alexnet_path, "torchvision AlexNet"), "features.", alexnet_path)
    linear = _read_state(linear_path, "LPIPS AlexNet linear-layer")
    for i, lin in enumerate(model.lins):
        _load_into(lin, {"weight": linear.get(f"lin{i}.model.1.weight", torch.empty(0))}, "", linear_path)
    return model.eval()


def fid_features_or_reason(path: str | None) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str | None]:
    if path is None:
        return None, ("no FID Inception weights given; pass --fid-weights pt_inception-2015-12-05-6726825d.pth "
                      "(pytorch-fid / torch-fidelity's file)")
    return load_fid_inception64(path), None


def lpips_or_reason(paths: str | None) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
                                                str | None]:
    """`paths` = 'ALEXNET_FILE,LINEAR_FILE' -> the distance, or (None, reason)."""
    if paths is None:
        return None, ("no LPIPS weights given; pass --lpips-weights alexnet-owt-7be5be79.pth,alex.pth "
                      "(torchvision AlexNet and the lpips package's v0.1 linear layers)")
    parts = [p.strip() for p in paths.split(",")]
    if len(parts) != 2 or not all(parts):
        raise CheckpointError(describe("--lpips-weights / Eval.lpips_weights",
                                       "two files separated by a comma: ALEXNET,LINEAR", repr(paths)))
    return load_lpips_alex(*parts), None
