"""Codebook use while the tokenizer trains: k-means start, dead-code restarts, usage statistics."""
import math

import pytest
import torch

from models.vqgan import VQGAN, VQGANConfig
from training.codebook import CodebookMonitor, encoder_vectors, kmeans, kmeans_codebook, usage_stats
from training.stage_tokenizer import TokenizerTrainModule
from utils.config import TokenizerConfig

K = 16


@pytest.fixture
def vqgan():
    torch.manual_seed(0)
    return VQGAN(VQGANConfig(resolution=16, ch_base=32, ch_mult=(1, 2), num_res_blocks=1, num_res_mids=1,
                             ch_latent=8, num_codebook=K, dim_codebook=8))


def test_kmeans_finds_separated_clusters():
    torch.manual_seed(0)
    centres = torch.randn(4, 3) * 10
    points = torch.cat([c + 0.01 * torch.randn(50, 3) for c in centres])  # [200, 3]
    found = kmeans(points, 4, iters=10, generator=torch.Generator().manual_seed(1))
    # every true centre has one found centre next to it
    assert torch.cdist(centres, found).min(1).values.max() < 0.1


def test_kmeans_keeps_every_code_on_data_when_clusters_run_empty():
    points = torch.cat([torch.zeros(30, 2), torch.ones(30, 2)])
    found = kmeans(points, 5, iters=3)
    assert torch.cdist(found, points).min(1).values.max() < 1e-6


def test_kmeans_codebook_uses_most_codes(vqgan):
    images = torch.rand(8, 3, 16, 16)
    kmeans_codebook(vqgan, images, iters=5)
    _, indices = vqgan.encode(images)
    assert torch.unique(indices).numel() >= K // 2
    vectors = encoder_vectors(vqgan, images)
    assert vectors.shape == (8 * 8 * 8, 8)


def test_restart_moves_only_unused_codes_to_encoder_outputs(vqgan):
    images = torch.rand(4, 3, 16, 16)
    monitor = CodebookMonitor(K)
    before = vqgan.quantizer.embedding.weight.detach().clone()
    used = torch.tensor([0, 3, 7])
    monitor.observe(used[torch.randint(3, (4, 8, 8))], images)
    moved = monitor.restart_dead(vqgan)
    after = vqgan.quantizer.embedding.weight.detach()
    dead = torch.ones(K, dtype=torch.bool)
    dead[used] = False
    assert moved == K - 3 and monitor.restarted == K - 3
    assert torch.equal(after[used], before[used])
    assert not torch.isclose(after[dead], before[dead]).all(1).any()
    # restarted codes sit (up to the small jitter) on encoder outputs of the observed batch
    vectors = encoder_vectors(vqgan, images)
    assert torch.cdist(after[dead], vectors).min(1).values.max() < 0.1 * vectors.std() * math.sqrt(8)
    assert int(monitor.counts.sum()) == 0  # the window starts again


def test_usage_stats():
    assert usage_stats(torch.tensor([5, 5, 0, 0])) == (2, pytest.approx(2.0))
    assert usage_stats(torch.zeros(4)) == (0, 0.0)


def test_train_module_restarts_on_its_interval_and_logs_usage(vqgan):
    cfg = TokenizerConfig()
    cfg.model = vqgan.config
    cfg.loss.restart_interval = 2
    from models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
    module = TokenizerTrainModule(vqgan, PatchDiscriminator(PatchDiscriminatorConfig(channels=8)), cfg)
    with torch.no_grad():
        vqgan.quantizer.embedding.weight[1:] = 1e3  # every position picks code 0
    loss, logs = module({"image": torch.rand(2, 3, 16, 16)}, step=0)
    assert logs["codes_used"] == 1 and logs["perplexity"] == pytest.approx(1.0)
    module.after_step(1)
    assert module.monitor.restarted == 0
    module.after_step(2)
    assert module.monitor.restarted == K - 1
    assert len(module.clip_groups()) == 2


def test_restart_threshold_counts_rarely_chosen_codes_as_dead(vqgan):
    monitor = CodebookMonitor(K)
    choices = torch.cat([torch.zeros(1000, dtype=torch.long), torch.arange(K)])  # code 0 busy, others once
    monitor.observe(choices.reshape(1, 1, -1), torch.rand(2, 3, 16, 16))
    assert monitor.restart_dead(vqgan, min_share=0.0) == 0
    monitor.observe(choices.reshape(1, 1, -1), torch.rand(2, 3, 16, 16))
    assert monitor.restart_dead(vqgan, min_share=0.25) == K - 1


def test_discriminator_has_its_own_optimiser_settings(vqgan):
    from models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
    from training.optim import build_optimizer
    from utils.config import TrainConfig

    cfg = TokenizerConfig()
    cfg.model = vqgan.config
    cfg.loss.disc_lr, cfg.loss.disc_betas = 1e-4, (0.5, 0.9)
    disc = PatchDiscriminator(PatchDiscriminatorConfig(channels=8))
    module = TokenizerTrainModule(vqgan, disc, cfg)
    opt = build_optimizer(module.optimizer_groups(TrainConfig(lr=1e-3, betas=(0.9, 0.95))), TrainConfig(lr=1e-3))
    disc_ids = {id(p) for p in disc.parameters()}
    for group in opt.param_groups:
        is_disc = all(id(p) in disc_ids for p in group["params"])
        assert (group["lr"], tuple(group["betas"])) == ((1e-4, (0.5, 0.9)) if is_disc else (1e-3, (0.9, 0.95)))
