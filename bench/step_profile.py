"""Where a LoRA UNet training step spends its time, for the training benchmark.

`lora_unet` builds the UNet as the trainer runs it (frozen weights in the run's dtype,
channels-last, rank-4 LoRA kept in fp32); `profile_step` times one forward + backward +
AdamW step with torch.profiler and sorts the operators' own time into families beside the
FLOPs flop_counter gives each family; `compile_trial` measures what torch.compile of the
UNet costs up front and saves per step.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

# Operator name -> family, first match wins (torch.profiler's aten:: names).
_FAMILIES = (
    ("convolution backward", ("convolution_backward",)),
    ("convolution", ("convolution", "conv2d")),
    ("attention", ("scaled_dot_product", "softmax", "baddbmm", "bmm")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::matmul", "aten::linear")),
    ("normalization", ("group_norm", "layer_norm")),
    ("copies and casts", ("copy_", "_to_copy", "aten::to", "contiguous", "clone", "cat")),
    ("optimizer", ("_foreach", "adam", "lerp", "addcdiv", "addcmul", "sqrt")),
    ("activations", ("silu", "gelu")),
    ("other elementwise", ("add", "mul", "div", "sub", "fill_", "zero_", "neg", "exp",
                          "pow", "mean", "sum")),
)
_FLOP_FAMILIES = {"convolution": "convolution", "convolution_backward": "convolution backward",
                  "mm": "matmul", "addmm": "matmul", "bmm": "attention",
                  "baddbmm": "attention"}


def family(op_name: str) -> str:
    for name, needles in _FAMILIES:
        if any(n in op_name for n in needles):
            return name
    return "other"


def lora_unet(model: Path, dtype: torch.dtype, channels_last: bool = True):
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import cast_training_params

    from dreamstudio.lora.adapters import UNET_TARGETS, add_lora
    from dreamstudio.train.setup import cast_frozen

    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    unet.requires_grad_(False)
    cast_frozen(unet, dtype)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    add_lora(unet, 4, UNET_TARGETS)
    cast_training_params(unet, torch.float32)
    unet.train()
    return unet


def make_step(unet, resolution: int, dtype: torch.dtype, optimizer=None):
    """One training step of `unet` on a random batch of one, as the trainer runs it."""
    side = resolution // 8
    latents = torch.randn(1, 4, side, side)
    t = torch.tensor([500])
    ctx = torch.randn(1, 77, unet.config.cross_attention_dim)
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)

    def step():
        with autocast:
            out = unet(latents.to(dtype), t, ctx.to(dtype)).sample
        out.float().pow(2).mean().backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step


def profile_step(model: Path, resolution: int, dtype: torch.dtype, steps: int = 3) -> dict:
    """Own time and FLOPs per operator family over `steps` profiled steps (after two
    warm-up steps); attention FLOPs are not counted by flop_counter on the CPU."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from dreamstudio.core.cpu_memory import reuse_freed_memory

    unet = lora_unet(model, dtype)
    params = [p for p in unet.parameters() if p.requires_grad]
    step = make_step(unet, resolution, dtype, torch.optim.AdamW(params, weight_decay=1e-2))
    with FlopCounterMode(display=False) as counter:
        step()
    flops: dict[str, float] = {}
    for op, count in counter.get_flop_counts()["Global"].items():
        name = _FLOP_FAMILIES.get(getattr(op, "__name__", str(op)).split(".")[0], "other")
        flops[name] = flops.get(name, 0) + count
    with reuse_freed_memory(torch.device("cpu")):
        step()
        step()
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        wall = (time.perf_counter() - start) / steps
    seconds: dict[str, float] = {}
    for event in prof.key_averages():
        name = family(event.key)
        seconds[name] = seconds.get(name, 0.0) + event.self_cpu_time_total / 1e6 / steps
    total = sum(seconds.values())
    families = {}
    for name in sorted(seconds, key=seconds.get, reverse=True):
        row = {"s": round(seconds[name], 4), "share": round(seconds[name] / total, 4)}
        if flops.get(name):
            row["gflop"] = round(flops[name] / 1e9, 2)
            row["tflops"] = round(flops[name] / seconds[name] / 1e12, 4)
        families[name] = row
    return {"dtype": str(dtype).replace("torch.", ""), "profiled_step_s": round(wall, 4),
            "families": families,
            "note": "own (self) CPU time per family from torch.profiler, per step; the "
                    "profiler adds a little time of its own"}


def compile_trial(model: Path, resolution: int, dtype: torch.dtype, steps: int = 6) -> dict:
    """Seconds of the first (compiling) step and the median later step, eager vs
    torch.compile, and the run length from which compiling pays for itself."""
    from dreamstudio.core.cpu_memory import reuse_freed_memory

    results = {}
    for name in ("eager", "compiled"):
        unet = lora_unet(model, dtype)
        if name == "compiled":
            unet = torch.compile(unet)
        step = make_step(unet, resolution, dtype)
        times = []
        with reuse_freed_memory(torch.device("cpu")):
            for _ in range(steps):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
        results[name] = {"first_step_s": round(times[0], 2),
                         "step_s": round(statistics.median(times[2:]), 4),
                         "steps_s": [round(t, 3) for t in times]}
        del unet, step
    eager, compiled = results["eager"], results["compiled"]
    saved = eager["step_s"] - compiled["step_s"]
    up_front = compiled["first_step_s"] - eager["first_step_s"]
    results["pays_off_after_steps"] = round(up_front / saved) if saved > 0 else None
    return results
