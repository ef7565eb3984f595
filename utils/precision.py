"""Precision policy for inference: which floating-point type the networks compute in.

`resolve_precision(precision, device)` turns a user choice into a dtype:

- 'fp32' -> None (no autocast: everything in float32).
- 'bf16' -> torch.bfloat16 (matmuls and convolutions under bf16 autocast).
- 'auto' -> torch.bfloat16 where bf16 matrix products run natively, else None:
    * CUDA: the GPU supports bf16 without emulation (Ampere and newer);
    * CPU: the processor has AVX512-BF16 or AMX tiles (oneDNN then uses bf16 dot-product
      instructions, 2-4x the float32 matmul rate); without them oneDNN emulates bf16 and float32
      is as fast, so 'auto' keeps float32;
    * any other device: float32.

`autocast(device, dtype)` is the matching context manager: `torch.autocast` for a bf16 dtype,
a no-op for None (float32). Networks keep float32 weights; only the compute type changes.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from utils.errors import ConfigError, describe

PRECISIONS = ("auto", "fp32", "bf16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 dot products
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where the file does not exist)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX).

    Asks PyTorch's CPU feature probe (`torch.cpu._is_avx512_bf16_supported`,
    `torch.cpu._is_amx_tile_supported`) where it exists, else reads the /proc/cpuinfo flags.
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(p) for p in probes):
        return any(p() for p in probes)
    return bool(_cpuinfo_flags() & set(CPU_BF16_FLAGS))


def cuda_has_native_bf16(device: torch.device) -> bool:
    """True when the CUDA device computes bf16 natively (compute capability 8.0 or newer)."""
    if not torch.cuda.is_available():
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype | None:
    """'auto' | 'fp32' | 'bf16' on `device` -> torch.bfloat16, or None for float32 (see module docstring)."""
    if precision not in PRECISIONS:
        raise ConfigError(describe("precision", f"one of {list(PRECISIONS)}", repr(precision)))
    device = torch.device(device)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16(device) else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return None


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """Autocast context on `device` computing in `dtype`; a no-op context for None (float32)."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    """None -> 'fp32', torch.bfloat16 -> 'bf16' (for logs and reports)."""
    return "fp32" if dtype in (None, torch.float32) else str(dtype).removeprefix("torch.").replace("bfloat", "bf")
