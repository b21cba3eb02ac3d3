"""DreamBooth + LoRA training loop (Ruiz et al. 2022), with optional prior preservation.

One call of `train` is one run: load the base model, fill in class images if needed,
attach LoRA to the UNet (and text encoder), optimise, and save the LoRA atomically.
Progress goes to a callback; a threading.Event cancels within one step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .class_images import generate_missing_class_images
from .config import TrainConfig
from .devices import pick_device, release_memory
from .errors import TrainingError
from .lora_files import (
    TEXT_ENCODER_TARGETS,
    UNET_TARGETS,
    add_lora,
    lora_state_dicts,
    save_lora,
)
from .models import load_pipeline, prediction_type
from .train_data import LatentCache, load_images, tokenize


@dataclass
class TrainProgress:
    phase: str  # "loading", "class_images", "training", "saving", "done", "cancelled"
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    elapsed: float = 0.0
    eta_seconds: float | None = None
    message: str = ""


@dataclass
class TrainResult:
    status: str  # "completed" or "cancelled"
    output_dir: Path
    lora_path: Path | None
    steps_done: int
    final_loss: float | None
    seconds: float
    losses: list[float] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    message: str = ""


ProgressFn = Callable[[TrainProgress], None]


def _new_accelerator(config: TrainConfig, device: torch.device):
    # Accelerate keeps process-wide singletons; a second run in the same app process with
    # other settings would otherwise fail with "AcceleratorState has already been initialized".
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(mixed_precision=config.mixed_precision, cpu=device.type == "cpu")


def _weight_dtype(mixed_precision: str) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


class _Batches:
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


def train(
    config: TrainConfig,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Run one DreamBooth LoRA training; see module docstring."""
    progress = progress or (lambda p: None)
    cancel = cancel or threading.Event()
    start = time.monotonic()
    device = pick_device(config.device)
    if config.mixed_precision == "fp16" and device.type == "cpu":
        raise TrainingError("fp16 mixed precision needs a GPU; use bf16 or no on the CPU.")

    progress(TrainProgress("loading", total_steps=config.steps, message="Loading base model"))
    instance = load_images(config.instance_dir, config.resolution, "instance")
    pipe = load_pipeline(config.model, device, torch.float32, config.model_config_dir)
    try:
        return _train_loaded(config, pipe, instance, device, progress, cancel, start)
    finally:
        del pipe
        release_memory()


def _train_loaded(config, pipe, instance, device, progress, cancel, start) -> TrainResult:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import cast_training_params

    skipped = [(str(p), r) for p, r in instance.skipped]
    if config.with_prior_preservation:
        def class_progress(done: int, total: int):
            progress(TrainProgress("class_images", total_steps=config.steps,
                                   elapsed=time.monotonic() - start,
                                   message=f"Class images: {done}/{total}"))

        generate_missing_class_images(
            pipe, config.class_dir, config.class_prompt, config.num_class_images,
            config.resolution, seed=config.seed, steps=config.class_image_steps,
            batch_size=config.class_image_batch_size, progress=class_progress, cancel=cancel,
        )
        if cancel.is_set():
            return _cancelled(config, 0, None, [], skipped, start, progress)
        class_images = load_images(config.class_dir, config.resolution, "class")
        skipped += [(str(p), r) for p, r in class_images.skipped]

    accelerator = _new_accelerator(config, device)
    weight_dtype = _weight_dtype(config.mixed_precision)
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    target_kind = prediction_type(noise_scheduler)
    for model in (unet, vae, text_encoder):
        model.requires_grad_(False)

    # Latents and (when the text encoder is frozen) prompt embeddings never change: encode once.
    instance_latents = LatentCache(vae, instance.pixels, device, torch.float32)
    class_latents = None
    if config.with_prior_preservation:
        class_latents = LatentCache(vae, class_images.pixels, device, torch.float32)
    vae.to("cpu")  # not needed any more during training; frees accelerator memory

    instance_ids = tokenize(tokenizer, [config.instance_prompt]).to(device)
    class_ids = (
        tokenize(tokenizer, [config.class_prompt]).to(device)
        if config.with_prior_preservation else None
    )

    if weight_dtype != torch.float32:
        unet.to(dtype=weight_dtype)
        text_encoder.to(dtype=weight_dtype)
    add_lora(unet, config.rank, UNET_TARGETS)
    params = [{"params": [p for p in unet.parameters() if p.requires_grad],
               "lr": config.learning_rate}]
    if config.train_text_encoder:
        add_lora(text_encoder, config.rank, TEXT_ENCODER_TARGETS)
    # Trainable LoRA weights stay fp32 even under mixed precision, so the optimizer and the
    # grad scaler work on fp32 (no "Attempting to unscale FP16 gradients").
    cast_training_params([unet, text_encoder], dtype=torch.float32)
    if config.train_text_encoder:
        params.append({"params": [p for p in text_encoder.parameters() if p.requires_grad],
                       "lr": config.text_encoder_lr})
        text_encoder.train()
        cached_embeds = None
    else:
        with torch.no_grad():
            cached_embeds = {
                "instance": text_encoder(instance_ids)[0],
                "class": text_encoder(class_ids)[0] if class_ids is not None else None,
            }
    unet.train()

    optimizer = torch.optim.AdamW(params, weight_decay=1e-2)
    if config.train_text_encoder:
        unet, text_encoder, optimizer = accelerator.prepare(unet, text_encoder, optimizer)
    else:
        unet, optimizer = accelerator.prepare(unet, optimizer)
    trainable = [p for group in params for p in group["params"]]

    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    instance_batches = _Batches(len(instance_latents), config.batch_size, generator)
    class_batches = (
        _Batches(len(class_latents), config.batch_size, generator) if class_latents else None
    )
    losses: list[float] = []
    train_start = time.monotonic()
    for step in range(config.steps):
        if cancel.is_set():
            return _cancelled(config, step, losses[-1] if losses else None, losses, skipped,
                              start, progress)
        latents = instance_latents.sample(instance_batches.next(), generator)
        ids = instance_ids.repeat(config.batch_size, 1)
        embeds = cached_embeds and cached_embeds["instance"].repeat(config.batch_size, 1, 1)
        if class_latents is not None:
            latents = torch.cat([latents, class_latents.sample(class_batches.next(), generator)])
            ids = torch.cat([ids, class_ids.repeat(config.batch_size, 1)])
            if cached_embeds:
                embeds = torch.cat(
                    [embeds, cached_embeds["class"].repeat(config.batch_size, 1, 1)]
                )
        latents = latents.to(device)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        timesteps = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
            generator=generator,
        ).to(device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        with accelerator.autocast():
            if embeds is None:
                embeds = text_encoder(ids)[0]
            pred = unet(noisy.to(weight_dtype), timesteps, embeds).sample
        if target_kind == "v_prediction":
            target = noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        pred, target = pred.float(), target.float()
        if class_latents is not None:
            pred, class_pred = pred.chunk(2)
            target, class_target = target.chunk(2)
            loss = F.mse_loss(pred, target) + config.prior_loss_weight * F.mse_loss(
                class_pred, class_target
            )
        else:
            loss = F.mse_loss(pred, target)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"The loss became {loss.item()} at step {step + 1}; training stopped and no "
                "LoRA was written (any earlier LoRA is untouched). Lower the learning rate, "
                "or use bf16/no mixed precision instead of fp16."
            )
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        done = step + 1
        per_step = (time.monotonic() - train_start) / done
        progress(TrainProgress(
            "training", step=done, total_steps=config.steps, loss=losses[-1],
            elapsed=time.monotonic() - start, eta_seconds=per_step * (config.steps - done),
            message=f"Step {done}/{config.steps}",
        ))

    progress(TrainProgress("saving", step=config.steps, total_steps=config.steps,
                           loss=losses[-1], elapsed=time.monotonic() - start,
                           message="Saving LoRA"))
    unet = accelerator.unwrap_model(unet)
    te = accelerator.unwrap_model(text_encoder) if config.train_text_encoder else None
    unet_layers, te_layers = lora_state_dicts(unet, te)
    seconds = time.monotonic() - start
    info = {
        "format": "diffusers-lora",
        "config": config.to_dict(),
        "prediction_type": target_kind,
        "steps_done": config.steps,
        "final_loss": losses[-1],
        "mean_loss_last_10": sum(losses[-10:]) / len(losses[-10:]),
        "seconds": round(seconds, 2),
        "device": str(device),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    lora_path = save_lora(config.output_dir, unet_layers, te_layers, info)
    accelerator.free_memory()
    progress(TrainProgress("done", step=config.steps, total_steps=config.steps,
                           loss=losses[-1], elapsed=seconds, eta_seconds=0.0,
                           message=f"Saved {lora_path}"))
    return TrainResult("completed", config.output_dir, lora_path, config.steps, losses[-1],
                       seconds, losses, skipped, f"Training finished: LoRA saved to {lora_path}")


def _cancelled(config, step, loss, losses, skipped, start, progress) -> TrainResult:
    seconds = time.monotonic() - start
    message = (f"Training cancelled after {step} of {config.steps} steps; no LoRA was written "
               f"(anything already in {config.output_dir} is untouched).")
    progress(TrainProgress("cancelled", step=step, total_steps=config.steps, loss=loss,
                           elapsed=seconds, message=message))
    return TrainResult("cancelled", config.output_dir, None, step, loss, seconds, losses,
                       skipped, message)


def fixed_noise_loss(pipe, pixels: torch.Tensor, prompt: str, seed: int = 0,
                     num_timesteps: int = 8) -> float:
    """Denoising loss of `pipe` on `pixels` at fixed noise and evenly spread timesteps.

    The same seed gives the same noise, timesteps and latent samples, so comparing this
    number before and after training measures what the LoRA learned.
    """
    from diffusers import DDPMScheduler

    device = pipe.unet.device
    generator = torch.Generator().manual_seed(seed)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    total = scheduler.config.num_train_timesteps
    timesteps = torch.linspace(total * 0.05, total * 0.95, num_timesteps).long()
    with torch.no_grad():
        cache = LatentCache(pipe.vae, pixels, device, pipe.vae.dtype)
        embeds = pipe.text_encoder(tokenize(pipe.tokenizer, [prompt]).to(device))[0]
        losses = []
        for i in range(len(cache)):
            latents = cache.sample(torch.tensor([i]), generator).repeat(num_timesteps, 1, 1, 1)
            noise = torch.randn(latents.shape, generator=generator)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            pred = pipe.unet(noisy.to(device), timesteps.to(device),
                             embeds.repeat(num_timesteps, 1, 1)).sample.float().cpu()
            target = noise
            if prediction_type(scheduler) == "v_prediction":
                target = scheduler.get_velocity(latents, noise, timesteps)
            losses.append(F.mse_loss(pred, target).item())
    return sum(losses) / len(losses)



