"""Which device and dtype to run on. Explicit, so every caller can say what it uses."""

from __future__ import annotations

import gc
import re

import torch

from ..errors import InputError

DEVICE_NAMES = ("cpu", "cuda", "mps")


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """CUDA if present, else Apple MPS, else CPU - unless the caller names one, which
    must then be there: a device that is missing fails here, not deep inside torch."""
    if isinstance(requested, torch.device):
        return requested  # one already picked (a generator's, passed on to its scorers)
    if requested:
        return _requested_device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _requested_device(name: str) -> torch.device:
    name = name.strip().lower()
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise InputError(f"Unknown device '{name}': use one of {', '.join(DEVICE_NAMES)} "
                         "(or cuda:N for the N-th GPU), or leave it out to pick one.")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"Device '{name}' was asked for, but PyTorch finds no CUDA GPU "
                             "here: use cpu, or leave the device out to pick one.")
        index = int(name.partition(":")[2] or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise InputError(f"Device '{name}' was asked for, but there are only {count} "
                             f"CUDA GPU(s): use cuda:0 to cuda:{count - 1}.")
    if name == "mps" and not _mps_available():
        raise InputError("Device 'mps' was asked for, but Apple's MPS is not available "
                         "here: use cpu, or leave the device out to pick one.")
    return torch.device(name)


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype a pipeline draws in. 'auto' takes what the hardware does fast, as training
    does: bf16 on Ampere+ GPUs and bf16-capable CPUs (about 2.5x fp32 on such a CPU),
    fp16 on older GPUs, else fp32 (MPS included). A forced fp16 needs a GPU: CPUs lack
    fp16 kernels for part of the UNet."""
    if precision == "auto":
        return _DTYPES.get(auto_mixed_precision(device), torch.float32)
    if precision not in _DTYPES:
        raise InputError(f"Unknown precision '{precision}': use auto, {', '.join(_DTYPES)}.")
    if precision == "fp16" and device.type == "cpu":
        raise InputError("fp16 generation needs a GPU: on the CPU use bf16 (fast where the "
                         "CPU has bf16 units), fp32, or auto.")
    return _DTYPES[precision]


def precision_name(dtype: torch.dtype) -> str:
    """'bf16' for torch.bfloat16: how PNG metadata and reports name a dtype."""
    return next(name for name, value in _DTYPES.items() if value == dtype)


def release_memory() -> None:
    """Give freed tensors back to the system/driver after a run ends."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if _mps_available():
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
