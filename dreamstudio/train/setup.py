"""Setting up a training run: accelerator, optimizer, speed options, data order."""

from __future__ import annotations

import logging

import torch

from ..config import TrainConfig
from ..config.train import PRODIGY_MISSING
from ..core.devices import pick_device
from ..errors import InputError, TrainingError

log = logging.getLogger("dreamstudio.training")


def run_device(requested: str | None) -> torch.device:
    """The device of this process. Under `accelerate launch` (or torchrun) each process gets
    its own GPU, which PartialState selects (it must exist before any model is moved)."""
    from accelerate import PartialState

    device = pick_device(requested)
    # Without cpu=True accelerate joins launched CPU processes into no group at all: each
    # would train alone on its own data, silently, and all would write the same files.
    state = PartialState(cpu=device.type == "cpu")
    return device if requested or device.type == "cpu" else state.device


def is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def new_accelerator(mixed_precision: str, device: torch.device, unused_weights: bool = False):
    """The run's Accelerator. `unused_weights`: some trainable weights get no gradient (SDXL
    conditions on text encoder 1's penultimate layer, so a LoRA on its last layer never
    trains), which data parallel must be told of, or it fails at the second step."""
    # Accelerate keeps process-wide singletons; a second run in the same app process with
    # other settings would otherwise fail with "AcceleratorState has already been initialized".
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if unused_weights \
        else []
    return Accelerator(mixed_precision=mixed_precision, cpu=device.type == "cpu",
                       kwargs_handlers=handlers)


class Batches:
    """Reproducible shuffled passes over N items, `size` at a time."""

    def __init__(self, n: int, size: int, generator: torch.Generator):
        self.n, self.size, self.generator = n, size, generator
        self.order: list[int] = []

    def next(self) -> torch.Tensor:
        picked = []
        while len(picked) < self.size:
            if not self.order:
                self.order = torch.randperm(self.n, generator=self.generator).tolist()
            picked.append(self.order.pop())
        return torch.tensor(picked)


def cast_frozen(model, dtype: torch.dtype) -> None:
    """Cast a frozen model's weights. diffusers warns about modules to keep in fp32 on every
    cast, even when there are none (the SD UNet has none): only then is the warning muted."""
    diffusers_log = logging.getLogger("diffusers.models.modeling_utils")
    level = diffusers_log.level
    if not getattr(model, "_keep_in_fp32_modules", None):
        diffusers_log.setLevel(logging.ERROR)
    try:
        model.to(dtype=dtype)
    finally:
        diffusers_log.setLevel(level)


def make_optimizer(params: list[dict], optimizer: str | bool = "adamw"):
    """The optimizer named by TrainConfig.optimizer (True / False: the older 8-bit switch)."""
    if isinstance(optimizer, bool):
        optimizer = "adamw8bit" if optimizer else "adamw"
    if optimizer == "prodigy":
        return _prodigy(params)
    if optimizer != "adamw8bit":
        return torch.optim.AdamW(params, weight_decay=1e-2)
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise TrainingError(
            "8-bit Adam needs the optional package bitsandbytes (CUDA only): "
            "pip install bitsandbytes, or turn 8-bit Adam off."
        ) from exc
    return bnb.optim.AdamW8bit(params, weight_decay=1e-2)


def _prodigy(params: list[dict]):
    try:
        from prodigyopt import Prodigy
    except ImportError as exc:
        raise InputError(PRODIGY_MISSING) from exc
    # Prodigy estimates the step size itself; each group's lr only scales its estimate
    # (1 is its authors' advice). Bias correction and a safeguarded warm-up are what
    # their diffusion-model advice adds.
    return Prodigy(params, weight_decay=1e-2, use_bias_correction=True,
                   safeguard_warmup=True)


def make_lr_scheduler(config: TrainConfig, optimizer, num_processes: int):
    """The learning-rate schedule of `config.steps` optimizer steps, for accelerate to wrap.
    Once prepared it steps once per process at each optimizer step (accelerate assumes the
    batch grew with the processes), so both lengths are scaled to match, as diffusers'
    script does; keeping it unprepared instead would lose accelerate's skipping of the
    steps an fp16 overflow skipped."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(config.lr_scheduler, optimizer=optimizer,
                         num_warmup_steps=config.lr_warmup_steps * num_processes,
                         num_training_steps=config.steps * num_processes)


def apply_speedups(unet, text_encoders: list, config: TrainConfig,
                   device: torch.device) -> None:
    """Attention kernel, memory format and gradient checkpointing (the UNet, and every
    text encoder that trains)."""
    # PyTorch SDPA is diffusers' default attention; xformers only pays off on CUDA.
    if device.type == "cuda":
        try:
            import xformers  # noqa: F401

            unet.enable_xformers_memory_efficient_attention()
        except Exception:  # noqa: BLE001 - missing or broken xformers: SDPA stays
            log.info("xformers not available; using PyTorch SDPA attention")
    if config.channels_last:
        unet.to(memory_format=torch.channels_last)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            for text_encoder in text_encoders:
                text_encoder.gradient_checkpointing_enable()
