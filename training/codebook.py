"""Keeping a VQ codebook in use while the tokenizer trains.

- `kmeans_codebook`: the codebook starts at k-means centres of encoder outputs of training images
  (every code starts where the data is and no two codes start at one point).
- `CodebookMonitor`: counts which codes the image positions choose; `restart_dead` moves the codes
  that (almost) nobody chose since the last restart to encoder outputs of the current batch (plus a little
  noise), so that a code left behind by the moving encoder gets a second chance; `usage` reports
  codes in use and the perplexity of the code distribution.

Nothing here adds parameters or buffers to the VQGAN: its state_dict keeps the release's names.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from models.vqgan import VQGAN

KMEANS_BATCH = 64          # images per encoder call while collecting vectors
RESTART_JITTER = 0.01      # noise (times the vectors' std) added to restarted codes


@torch.no_grad()
def encoder_vectors(vqgan: VQGAN, images: torch.Tensor) -> torch.Tensor:
    """Encoder outputs of images [N, 3, S, S] as rows [N*h*w, D] (float32)."""
    out = []
    for i in range(0, len(images), KMEANS_BATCH):
        z = vqgan.encoder(images[i:i + KMEANS_BATCH]).float()  # [b, D, h, w]
        out.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))  # [b*h*w, D]
    return torch.cat(out)


@torch.no_grad()
def kmeans(vectors: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means of rows [M, D] into k centres [k, D], from k distinct random rows
    (k-means++ is not needed at these sizes). An empty cluster takes the row farthest from its centre."""
    m = len(vectors)
    pick = torch.randperm(m, generator=generator)[:k] if m >= k else torch.randint(m, (k,), generator=generator)
    centres = vectors[pick].clone()  # [k, D]
    for _ in range(iters):
        dist_sq = torch.cdist(vectors, centres).pow(2)  # [M, k]
        nearest = dist_sq.argmin(1)  # [M]
        counts = torch.bincount(nearest, minlength=k).float()  # [k]
        sums = torch.zeros_like(centres).index_add_(0, nearest, vectors)  # [k, D]
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
        empty = (~filled).nonzero().flatten()
        if len(empty):
            far = dist_sq.gather(1, nearest[:, None]).squeeze(1).topk(len(empty)).indices
            centres[empty] = vectors[far]
    return centres


@torch.no_grad()
def kmeans_codebook(vqgan: VQGAN, images: torch.Tensor, iters: int) -> None:
    """Set the codebook to k-means centres of the encoder outputs of `images` [N, 3, S, S]."""
    vectors = encoder_vectors(vqgan, images)
    centres = kmeans(vectors, vqgan.config.num_codebook, iters)
    vqgan.quantizer.embedding.weight.copy_(centres.to(vqgan.quantizer.embedding.weight))


def usage_stats(counts: torch.Tensor) -> tuple[int, float]:
    """(codes used, perplexity exp(H)) of per-code counts [K]."""
    total = float(counts.sum())
    if total == 0:
        return 0, 0.0
    p = counts.float() / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return int((counts > 0).sum()), float(math.exp(float(entropy)))


class CodebookMonitor:
    """Code-choice counts since the last restart, and the restart of codes nobody chose."""

    def __init__(self, num_codes: int):
        self.counts = torch.zeros(num_codes, dtype=torch.long)
        self.last_images: torch.Tensor | None = None  # [B, 3, S, S] the latest batch
        self.restarted = 0

    @torch.no_grad()
    def observe(self, indices: torch.Tensor, images: torch.Tensor) -> None:
        """indices [B, h, w] chosen for the batch `images` [B, 3, S, S]."""
        self.counts += torch.bincount(indices.flatten().cpu(), minlength=len(self.counts))
        self.last_images = images.detach()

    @torch.no_grad()
    def restart_dead(self, vqgan: VQGAN, min_share: float = 0.0) -> int:
        """Move every code chosen at most min_share times the uniform share of the choices since
        the last call (0: never chosen) to a random encoder output of the latest batch; return how
        many moved. Under torch.distributed, rank 0's codebook is broadcast."""
        weight = vqgan.quantizer.embedding.weight
        floor = min_share * float(self.counts.sum()) / len(self.counts)
        dead = (self.counts <= floor).nonzero().flatten()
        moved = 0
        if len(dead) and self.last_images is not None:
            vectors = encoder_vectors(vqgan, self.last_images).to(weight.device)  # [B*h*w, D]
            pick = torch.randint(len(vectors), (len(dead),), device=vectors.device)
            noise = torch.randn(len(dead), vectors.shape[1], device=vectors.device) * vectors.std() * RESTART_JITTER
            weight[dead.to(weight.device)] = (vectors[pick] + noise).to(weight.dtype)
            moved = len(dead)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(weight.data, src=0)
        self.counts.zero_()
        self.restarted += moved
        return moved
