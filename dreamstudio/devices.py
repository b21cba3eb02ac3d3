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
