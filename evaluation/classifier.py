"""ImageNet classifier for the n-way top-1 semantic accuracy (spec §5).

The paper labels images with torchvision's ViT-H/14 (`ViT_H_14_Weights.DEFAULT`,
i.e. IMAGENET1K_SWAG_E2E_V1: 518 px input, 1000 classes). Nothing is downloaded:
the user points to the weights file torchvision publishes
(`vit_h_14_swag-80465313.pth`, a plain state dict), which is read with
`torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ViT_H_14_Weights, vit_h_14

from models.checkpoints import safe_torch_load
from utils.errors import CheckpointError, DataError, describe

VIT_H_14_IMAGE_SIZE = 518  # min_size of IMAGENET1K_SWAG_E2E_V1
IMAGENET_CLASSES = 1000
DEFAULT_BATCH_SIZE = 8
WEIGHTS_OPTION = "--classifier-weights"


@dataclass
class ImageNetClassifier:
    """A classifier plus its eval transform: images -> softmax probabilities.

    `model` maps normalised `[B, 3, S, S]` tensors to logits `[B, C]`;
    `transform` maps `[B, 3, H, W]` float images in [0, 1] to the model's input.
    """

    model: nn.Module
    transform: nn.Module
    device: torch.device = torch.device("cpu")
    batch_size: int = DEFAULT_BATCH_SIZE

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """`images [B, 3, H, W]` float in [0, 1] -> probabilities `[B, C]` (float32, CPU)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(describe("classifier input", "[B, 3, H, W] float images", tuple(images.shape)))
        self.model.eval()
        probs = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start:start + self.batch_size].to(self.device, torch.float32)
            logits = self.model(self.transform(batch))  # [b, C]
            probs.append(logits.float().softmax(dim=-1).cpu())
        return torch.cat(probs)  # [B, C]


def imagenet_eval_transform() -> nn.Module:
    """torchvision's eval transform for ViT-H/14 SWAG-E2E: bicubic resize 518, centre crop 518, ImageNet mean/std.

    Building it downloads nothing (it only reads the weights enum's metadata).
    """
    return ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1.transforms()


def load_imagenet_classifier(weights_path: str | Path, device: str | torch.device = "cpu",
                             batch_size: int = DEFAULT_BATCH_SIZE) -> ImageNetClassifier:
    """Build torchvision ViT-H/14 at 518 px and load `weights_path` (strict, weights_only).

    The network is created on the meta device and the loaded tensors are
    assigned in place, so the 632 M parameters are held in memory once.
    Raises CheckpointError when the file is missing, unreadable, or does not fit.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise CheckpointError(describe(path, "the torchvision ViT-H/14 ImageNet weights file "
                                       "(vit_h_14_swag-80465313.pth)", "no such file"))
    state = safe_torch_load(path)
    if not isinstance(state, dict):
        raise CheckpointError(describe(path, "a state dict (mapping name -> tensor)", type(state).__name__))
    with torch.device("meta"):
        model = vit_h_14(weights=None, image_size=VIT_H_14_IMAGE_SIZE, num_classes=IMAGENET_CLASSES)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise CheckpointError(describe(path, "the parameters of torchvision vit_h_14 at 518 px "
                                       "(IMAGENET1K_SWAG_E2E_V1)", str(err).splitlines()[0])) from err
    model = model.to(device).eval()
    return ImageNetClassifier(model=model, transform=imagenet_eval_transform(),
                              device=torch.device(device), batch_size=batch_size)


def classifier_or_reason(weights_path: str | Path | None, device: str | torch.device = "cpu"
                         ) -> tuple[ImageNetClassifier | None, str | None]:
    """Load the classifier, or return `(None, reason)` when no weights file is available.

    No path gives a reason (the metric is then reported as skipped); a path that
    was given but is missing or broken raises CheckpointError, so a typo never
    silently drops the metric.
    """
    if weights_path is None:
        return None, (f"no torchvision ViT-H/14 ImageNet weights given; pass {WEIGHTS_OPTION} "
                      "<path to vit_h_14_swag-80465313.pth>")
    return load_imagenet_classifier(weights_path, device=device), None
