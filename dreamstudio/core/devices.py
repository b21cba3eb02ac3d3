"""Which device and dtype to run on. Explicit, so every caller can say what it uses."""

from __future__ import annotations

import gc

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA if present, else Apple MPS, else CPU - unless the caller names one."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def inference_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA halves memory at no visible cost; MPS and CPU stay in fp32."""
    return torch.float16 if device.type == "cuda" else torch.float32


def release_memory() -> None:
    """Give freed tensors back to the system/driver after a run ends."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def cpu_has_bf16() -> bool:
    """True where the CPU has bf16 matrix units (AVX512-BF16 or AMX), which make bf16 ~4x
    faster than fp32 for the UNet; without them bf16 is emulated and slower."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_mixed_precision(device: torch.device) -> str:
    """bf16 on Ampere+ GPUs and bf16-capable CPUs, fp16 on older GPUs, else full precision."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "no"
