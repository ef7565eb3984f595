"""Inference speed of LEA decoding (fMRI -> images) and encoding (image features -> fMRI) at paper size.

Two data flows run in one process on the same inputs and the same random weights:

(a) baseline, the authors' release data flow: float32, attention written out as
    softmax(q k^T * scale) v ('math'), the fMRI encoder re-run for every sample, the ground-truth
    image VQ-encoded (only its token-grid shape is used), one `generate` call per trial and sample,
    one VQGAN decode per image; encoding runs the fMRI decoder one trial at a time.
(b) default: fused SDPA attention, the fMRI encoder once per trial, one batched `generate` over
    trials x samples, no ground-truth encode, bf16 autocast where `resolve_precision` says so,
    channels_last VQGAN decoder; encoding runs the fMRI decoder once over all trials.

Networks: fMRI autoencoder (24 x 1024 encoder, 8 x 512 decoder, ROI groups of the dataset's first
subject), MaskGIT transformer (24 x 768, 257 tokens), VQGAN (256 px). Weights are random (timing
does not depend on their values); the ridge heads are fitted on random pairs. The image feature
extractor (CLIP) is out of scope: encoding time covers the ridge head and the fMRI decoder only.

FLOPs of the transformer steps are counted analytically (matmuls only, 2 FLOPs per multiply-add):
per forward of R rows of L = N + 1 tokens, width C, MLP width M, K codebook logits over N tokens:
  depth * (2 R L C (3C) + 2 R L C C + 2 * 2 R L C M + 2 * 2 R L^2 C)   # qkv, proj, MLP, q k^T and a v
  + 2 R N C C + 2 R N C K                                              # head MLP and tied logits
LayerNorm, GELU, softmax, embeddings and sampling are not counted.

Usage: python bench/bench_inference.py [--batch 4] [--samples 2] [--steps 11] [--device cpu|cuda]
       [--dataset GOD|BOLD] [--precision auto|fp32|bf16] [--compile] [--profile] [--seed 0]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.alignment import AlignmentHeads  # noqa: E402
from models.fmri_autoencoder import FMRIAutoencoder, FMRIAutoencoderConfig  # noqa: E402
from models.layers import attention_implementation  # noqa: E402
from models.maskgit import MaskGITConfig, MaskGITTransformer  # noqa: E402
from models.vqgan import VQGAN, VQGANConfig  # noqa: E402
from utils.precision import autocast, precision_name, resolve_precision  # noqa: E402

# ROI group sizes of the first subject of each dataset (paper values: GOD sbj_1, BOLD5000 CSI1)
ROI_PATCH = {"GOD": (1004, 801, 476, 588, 431, 249, 157, 760),
             "BOLD": (495, 342, 288, 331, 229)}
MATMUL_SIZE = 2048  # side of the square matmuls that measure the peak rate
MATMUL_REPEATS = 5
PROFILE_TOP = 10  # operators listed by --profile
NUM_TRAIN_PAIRS = 1200  # random pairs the ridge heads are fitted on
GIGA = 1e9
MIB = 2 ** 20
KIB = 2 ** 10
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK_RSS = "5"  # written to clear_refs: reset the peak resident set size (Linux >= 4.0)


# ---------------------------------------------------------------- timing and memory

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Accumulates wall-clock seconds per label; synchronises the device around each interval."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start


class ForwardTimer:
    """Times every forward of a module (hooks), so generation splits into network and sampling time."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.device, self.seconds, self.calls, self.rows = device, 0.0, 0, 0
        self._start = 0.0
        self._handles = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _pre(self, module, args):
        synchronize(self.device)
        self._start = time.perf_counter()

    def _post(self, module, args, output):
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._start
        self.calls += 1
        self.rows += args[0].shape[0]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class PeakMemory:
    """Peak memory of one phase: CUDA allocator peak on GPUs; on CPUs the process's peak resident set
    (VmHWM, reset at the start of the phase through /proc/self/clear_refs; where that is not possible
    the peak since the process started, `ru_maxrss`)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = ""

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "CUDA max_memory_allocated"
            return
        try:
            PROC_CLEAR_REFS.write_text(RESET_PEAK_RSS)
            self.kind = "peak RSS of the phase (VmHWM)"
        except OSError:
            self.kind = "peak RSS since process start (ru_maxrss)"

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / MIB
        if self.kind.startswith("peak RSS of the phase"):
            for line in PROC_STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * KIB / MIB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB / MIB


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Best GFLOP/s of a MATMUL_SIZE^2 matmul in `dtype` over MATMUL_REPEATS runs (after one warm-up)."""
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device).to(dtype)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(MATMUL_REPEATS):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIZE ** 3 / best / GIGA


def maskgit_forward_flops(config: MaskGITConfig, rows: int) -> float:
    """Matmul FLOPs of one MaskGIT forward over `rows` sequences (formula in the module docstring)."""
    c = config
    L, N, C, K = c.num_tokens + 1, c.num_tokens, c.embed_dim, c.num_codebook
    M = int(C * c.mlp_ratio)
    per_layer = 2 * rows * L * C * (3 * C) + 2 * rows * L * C * C + 2 * 2 * rows * L * C * M \
        + 2 * 2 * rows * L * L * C
    return c.depth * per_layer + 2 * rows * N * C * C + 2 * rows * N * C * K


# ---------------------------------------------------------------- models and inputs

@dataclass
class Networks:
    fmri_ae: FMRIAutoencoder
    maskgit: MaskGITTransformer
    vqgan: VQGAN
    heads: AlignmentHeads


def build_networks(dataset: str, device: torch.device, seed: int) -> Networks:
    """Paper-size networks with their own random initialisation, in eval mode on `device`."""
    torch.manual_seed(seed)
    fmri_ae = FMRIAutoencoder(FMRIAutoencoderConfig(roi_patch=ROI_PATCH[dataset]))
    maskgit = MaskGITTransformer(MaskGITConfig())
    vqgan = VQGAN(VQGANConfig())
    latents = torch.randn(NUM_TRAIN_PAIRS, fmri_ae.config.latent_dim, dtype=torch.float64)
    features = torch.randn(NUM_TRAIN_PAIRS, maskgit.config.condition_dim, dtype=torch.float64)
    heads = AlignmentHeads().fit(latents, features)
    return Networks(fmri_ae.to(device).eval(), maskgit.to(device).eval(), vqgan.to(device).eval(), heads)


@dataclass
class Inputs:
    fmri: torch.Tensor      # [T, V] test fMRI
    images: torch.Tensor    # [T, 3, H, W] ground-truth stimuli in [0, 1]
    features: torch.Tensor  # [T, Di] image features (encoding input)


def make_inputs(nets: Networks, trials: int, device: torch.device, seed: int) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    res = nets.vqgan.config.resolution
    return Inputs(fmri=torch.randn(trials, nets.fmri_ae.config.num_voxels, generator=g).to(device),
                  images=torch.rand(trials, 3, res, res, generator=g).to(device),
                  features=torch.randn(trials, nets.maskgit.config.condition_dim, generator=g).to(device))


# ---------------------------------------------------------------- the two data flows

@dataclass
class Settings:
    samples: int
    steps: int
    dtype: torch.dtype | None
    seed: int


def predict_features(nets: Networks, latents: torch.Tensor) -> torch.Tensor:
    """fMRI latents [T, Df] -> MaskGIT conditions [T, Di] (ridge in float64 on the CPU, whole set)."""
    return nets.heads.decode(latents.double().cpu()).float().to(latents.device)


def baseline_decode(nets: Networks, x: Inputs, s: Settings, timer: Timer) -> torch.Tensor:
    """Release data flow; returns token ids [T, S, N]."""
    device, T = x.fmri.device, x.fmri.shape[0]
    generator = torch.Generator(device).manual_seed(s.seed)
    tokens = []
    for _ in range(s.samples):
        with timer("fMRI encoder + ridge"):
            latents = torch.cat([nets.fmri_ae.encode(x.fmri[i:i + 1])[:, 0] for i in range(T)])  # [T, Df]
            features = predict_features(nets, latents)  # [T, Di]
        for i in range(T):
            with timer("ground-truth VQ encode"):
                _, indices = nets.vqgan.encode(x.images[i:i + 1])  # only indices.shape is used
            with timer("generate"):
                ids = nets.maskgit.generate(features[i:i + 1], num_samples=1, steps=s.steps,
                                            generator=generator)  # [1, 1, N]
            with timer("VQGAN decode"):
                nets.vqgan.decode_indices(ids[:, 0].reshape(indices.shape))  # [1, 3, H, W]
            tokens.append(ids)
    return torch.cat(tokens).reshape(s.samples, T, -1).transpose(0, 1)  # [T, S, N]


def default_decode(nets: Networks, x: Inputs, s: Settings, timer: Timer) -> torch.Tensor:
    """Batched data flow; returns token ids [T, S, N]."""
    device = x.fmri.device
    generator = torch.Generator(device).manual_seed(s.seed)
    with autocast(device, s.dtype):
        with timer("fMRI encoder + ridge"):
            latents = nets.fmri_ae.encode(x.fmri)[:, 0].float()  # [T, Df]
            features = predict_features(nets, latents)  # [T, Di]
        with timer("generate"):
            ids = nets.maskgit.generate(features, num_samples=s.samples, steps=s.steps,
                                        generator=generator)  # [T, S, N]
        with timer("VQGAN decode"):
            nets.vqgan.decode_indices(ids.flatten(0, 1))  # [T*S, 3, H, W]
    return ids


def baseline_encode(nets: Networks, x: Inputs, s: Settings, timer: Timer) -> None:
    with timer("ridge + fMRI decoder"):
        latents = nets.heads.encode(x.features.double().cpu()).float().to(x.features.device)  # [T, Df]
        for i in range(latents.shape[0]):
            nets.fmri_ae.decode(latents[i:i + 1])  # [1, 1, V]


def default_encode(nets: Networks, x: Inputs, s: Settings, timer: Timer) -> None:
    with timer("ridge + fMRI decoder"), autocast(x.features.device, s.dtype):
        latents = nets.heads.encode(x.features.double().cpu()).float().to(x.features.device)  # [T, Df]
        nets.fmri_ae.decode(latents)  # [T, 1, V]


@dataclass
class PathResult:
    decode_seconds: dict[str, float]
    encode_seconds: float
    forward_seconds: float
    forward_flops: float
    peak_mib: float
    memory_kind: str


def run_path(nets: Networks, x: Inputs, s: Settings, decode: Callable, encode: Callable,
             attention: str, generate_rows: tuple[int, int]) -> PathResult:
    """Warm up, then time `decode` and `encode` under `attention` ('math' | 'sdpa').

    generate_rows: (trials, samples) of one `generate` call of `decode`, for the warm-up.
    """
    device = x.fmri.device
    memory = PeakMemory(device)
    timer, enc_timer = Timer(device), Timer(device)
    # no_grad, not inference_mode: under inference_mode autocast re-casts every weight at every call
    with torch.no_grad(), attention_implementation(attention):
        warm_up(nets, x, s, *generate_rows)
        memory.start()
        forwards = ForwardTimer(nets.maskgit, device)
        try:
            decode(nets, x, s, timer)
        finally:
            forwards.remove()
        encode(nets, x, s, enc_timer)
    flops = maskgit_forward_flops(nets.maskgit.config, forwards.rows)  # linear in the rows
    return PathResult(timer.seconds, enc_timer.seconds["ridge + fMRI decoder"], forwards.seconds, flops,
                      memory.peak_mib(), memory.kind)


def warm_up(nets: Networks, x: Inputs, s: Settings, trials: int, samples: int) -> None:
    """One call of each network in the path's precision, one generate step at the path's batch shape
    (first-call costs, and compilation with --compile, stay out of the timings)."""
    device = x.fmri.device
    with autocast(device, s.dtype):
        nets.fmri_ae.encode(x.fmri[:2])
        nets.fmri_ae.decode(torch.randn(2, nets.fmri_ae.config.latent_dim, device=device))
        nets.maskgit.generate(x.features[:trials], num_samples=samples, steps=1)
        nets.vqgan.decode_indices(torch.zeros(1, nets.maskgit.config.num_tokens, dtype=torch.long,
                                              device=device))


# ---------------------------------------------------------------- report

def profile_forward(nets: Networks, x: Inputs, s: Settings, rows: int, top: int = PROFILE_TOP) -> None:
    """Print the `top` operators by self CPU time of one MaskGIT forward over `rows` rows."""
    from torch.profiler import ProfilerActivity, profile

    ids = torch.full((rows, nets.maskgit.config.num_tokens), nets.maskgit.mask_token_id, device=x.fmri.device)
    cond = x.features[:1].expand(rows, -1)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.fmri.device.type == "cuda" else [])
    with torch.no_grad(), autocast(x.fmri.device, s.dtype):
        nets.maskgit(ids, cond)
        with profile(activities=activities) as prof:
            nets.maskgit(ids, cond)
    print(f"profile of one default-path transformer forward ({rows} rows):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def load_average() -> str:
    """1-minute load average (other processes on the machine distort the timings)."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {torch.get_num_threads()} threads"


def print_path(label: str, result: PathResult, trials: int, samples: int, peak_bf16: float,
               peak_fp32: float, dtype: torch.dtype | None) -> float:
    """Print one path's numbers; return its decode seconds per sample."""
    decoded = trials * samples
    total = sum(result.decode_seconds.values())
    per_sample = total / decoded
    print(f"{label}")
    print(f"  decode: {per_sample:.3f} s per sample ({total:.2f} s for {decoded} samples)")
    for part, sec in result.decode_seconds.items():
        print(f"    {part:<24s} {sec / decoded:8.3f} s per sample ({100 * sec / total:5.1f}%)")
    sampling = result.decode_seconds["generate"] - result.forward_seconds
    print(f"    of generate: transformer forwards {result.forward_seconds / decoded:.3f} s, "
          f"sampling {sampling / decoded:.3f} s per sample")
    rate = result.forward_flops / result.forward_seconds / GIGA
    peak = peak_bf16 if dtype == torch.bfloat16 else peak_fp32
    print(f"  transformer steps: {result.forward_flops / GIGA:.0f} GFLOP, {rate:.1f} GFLOP/s = "
          f"{100 * rate / peak:.0f}% of the {precision_name(dtype)} matmul peak "
          f"({100 * rate / peak_bf16:.0f}% of the bf16 peak)")
    print(f"  encode (ridge + fMRI decoder): {result.encode_seconds / trials:.3f} s per trial")
    print(f"  peak memory: {result.peak_mib:.0f} MiB ({result.memory_kind})")
    return per_sample


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="test trials")
    parser.add_argument("--samples", type=int, default=2, help="images decoded per trial")
    parser.add_argument("--steps", type=int, default=11, help="MaskGIT decoding steps")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dataset", default="GOD", choices=sorted(ROI_PATCH))
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="precision of the default path (the baseline is always fp32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the MaskGIT transformer "
                        "in the default path (compile time is excluded from the timings and printed)")
    parser.add_argument("--profile", action="store_true",
                        help="print a torch.profiler table of one default-path transformer forward")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch < 2:
        parser.error("--batch must be at least 2 (ridge re-standardisation takes test-set statistics)")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    dtype = resolve_precision(args.precision, device)

    print(f"LEA inference benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}")
    print(f"machine: {describe_machine(device)}; torch {torch.__version__}")
    print(f"setup: {args.dataset} ({sum(ROI_PATCH[args.dataset])} voxels), {args.batch} trials x "
          f"{args.samples} samples, {args.steps} steps; default precision {args.precision} -> "
          f"{precision_name(dtype)}; compile {args.compile}")
    peaks = [(matmul_peak(device, torch.float32), matmul_peak(device, torch.bfloat16))]
    print(f"matmul peak ({MATMUL_SIZE}^2, best of {MATMUL_REPEATS}) at the start: fp32 {peaks[0][0]:.1f} GFLOP/s, "
          f"bf16 {peaks[0][1]:.1f} GFLOP/s ({peaks[0][1] / peaks[0][0]:.2f}x); load {load_average()}")

    start = time.perf_counter()
    nets = build_networks(args.dataset, device, args.seed)
    x = make_inputs(nets, args.batch, device, args.seed)
    print(f"built paper-size networks in {time.perf_counter() - start:.1f} s")

    base = run_path(nets, x, Settings(args.samples, args.steps, None, args.seed),
                    baseline_decode, baseline_encode, attention="math", generate_rows=(1, 1))
    print(f"baseline done; load {load_average()}")
    nets.vqgan.to(memory_format=torch.channels_last)
    if args.compile:
        nets.maskgit.compile(dynamic=False)
    start = time.perf_counter()
    fast = run_path(nets, x, Settings(args.samples, args.steps, dtype, args.seed),
                    default_decode, default_encode, attention="sdpa",
                    generate_rows=(args.batch, args.samples))
    print(f"default path set-up (warm-up{' and compile' if args.compile else ''}) and run: "
          f"{time.perf_counter() - start:.1f} s; load {load_average()}")
    peaks.append((matmul_peak(device, torch.float32), matmul_peak(device, torch.bfloat16)))
    peak_fp32, peak_bf16 = max(p[0] for p in peaks), max(p[1] for p in peaks)
    print(f"matmul peak at the end: fp32 {peaks[1][0]:.1f} GFLOP/s, bf16 {peaks[1][1]:.1f} GFLOP/s; "
          f"fractions below use the higher of start and end: fp32 {peak_fp32:.1f}, bf16 {peak_bf16:.1f}")
    base_s = print_path("(a) baseline: release data flow, fp32, math attention",
                        base, args.batch, args.samples, peak_bf16, peak_fp32, None)
    fast_s = print_path(f"(b) default: batched, SDPA, {precision_name(dtype)}, channels_last VQGAN",
                        fast, args.batch, args.samples, peak_bf16, peak_fp32, dtype)
    if args.profile:
        profile_forward(nets, x, Settings(args.samples, args.steps, dtype, args.seed), args.batch * args.samples)
    print(f"encode speedup: {base.encode_seconds / fast.encode_seconds:.2f}")
    print(f"speedup: {base_s / fast_s:.2f}")


if __name__ == "__main__":
    main()
