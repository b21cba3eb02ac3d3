"""DreamBooth + LoRA training loop (Ruiz et al. 2022), with optional prior preservation.

One call of `train` is one run: load the base model, fill in class images if needed,
attach LoRA to the UNet (and text encoder), optimise, and save the LoRA atomically.
Progress goes to a callback; a threading.Event cancels within one step. Runs under
`accelerate launch` are data-parallel with no code of our own for it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..core.cpu_memory import reuse_freed_memory
from ..core.devices import auto_mixed_precision, pick_device, release_memory
from ..core.models import load_pipeline, prediction_type
from ..errors import TrainingError
from ..lora.adapters import TEXT_ENCODER_TARGETS, UNET_TARGETS, add_lora, peft_weights
from ..lora.files import lora_state_dicts, save_lora
from ..lora.kohya import export_kohya, subject_file_name
from .checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from .class_images import generate_missing_class_images
from .events import ProgressFn, TrainProgress, TrainResult
from .latents import LatentCache, load_images, tokenize
from .setup import Batches, apply_speedups, cast_frozen, make_optimizer, new_accelerator
from .validation import render_validation

log = logging.getLogger("dreamstudio.training")


# Settings a checkpoint must share with the run that resumes it.
_RESUME_KEYS = ("model", "instance_prompt", "class_prompt", "rank", "train_text_encoder",
                "resolution", "batch_size", "seed")


def _attach_log_file(output_dir: Path) -> logging.Handler:
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _run_device(requested: str | None) -> torch.device:
    """The device of this process. Under `accelerate launch` each process gets its own GPU,
    which PartialState selects (it must exist before any model is moved)."""
    if requested:
        return pick_device(requested)
    from accelerate import PartialState

    return PartialState().device


def train(
    config: TrainConfig,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Run one DreamBooth LoRA training; see module docstring."""
    progress = progress or (lambda p: None)
    cancel = cancel or threading.Event()
    device = _run_device(config.device)
    precision = config.mixed_precision
    if precision == "auto":
        precision = auto_mixed_precision(device)
    if precision == "fp16" and device.type == "cpu":
        raise TrainingError("fp16 mixed precision needs a GPU; use bf16 or no on the CPU.")
    if config.resume and latest_checkpoint(config.output_dir) is None:
        raise TrainingError(
            f"Nothing to resume: {config.output_dir} has no complete checkpoint. "
            "Start the run without resume."
        )
    handler = _attach_log_file(config.output_dir)
    try:
        log.info("run starting: %s (mixed precision %s, device %s)", config.to_dict(),
                 precision, device)
        progress(TrainProgress("loading", total_steps=config.steps, message="Loading base model"))
        instance = load_images(config.instance_dir, config.resolution, "instance")
        pipe = load_pipeline(config.model, device, torch.float32, config.model_config_dir)
        run = _Run(config, pipe, instance, device, precision, progress, cancel)
        with reuse_freed_memory(device):
            result = run.execute()
        log.info("run ended: %s", result.message)
        return result
    except Exception as exc:
        log.error("run failed: %s", exc)
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
        pipe = run = None
        release_memory()


class _Run:
    """The state of one training run; split into small steps for readability."""

    def __init__(self, config, pipe, instance, device, precision, progress, cancel):
        self.config, self.pipe, self.device = config, pipe, device
        self.precision, self.progress, self.cancel = precision, progress, cancel
        self.instance = instance
        self.start = time.monotonic()
        self.skipped = [(str(p), r) for p, r in instance.skipped]
        self.losses: list[float] = []
        self.validation_images: list[str] = []
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            precision, torch.float32)

    # ---- set-up ---------------------------------------------------------------------
    def _class_images(self):
        cfg = self.config

        def report(done: int, total: int):
            self._emit("class_images", 0, message=f"Class images: {done}/{total}")

        from accelerate import PartialState

        # Under several processes only the first generates; the others then find the images.
        with PartialState().main_process_first():
            made = generate_missing_class_images(
                self.pipe, cfg.class_dir, cfg.class_prompt, cfg.num_class_images,
                cfg.resolution, seed=cfg.seed, steps=cfg.class_image_steps,
                batch_size=cfg.class_image_batch_size, progress=report, cancel=self.cancel,
                autocast_dtype=self.weight_dtype,
            )
        log.info("class images: %d generated into %s", made, cfg.class_dir)
        if self.cancel.is_set():
            return None
        loaded = load_images(cfg.class_dir, cfg.resolution, "class")
        self.skipped += [(str(p), r) for p, r in loaded.skipped]
        return loaded

    def _latents(self, pixels):
        cache = LatentCache(self.pipe.vae, pixels, self.device, torch.float32)
        if self.config.flip:
            # Both orientations cached: a flip is then a free index choice at train time.
            flipped = LatentCache(self.pipe.vae, pixels.flip(-1), self.device, torch.float32)
            cache.mean = torch.cat([cache.mean, flipped.mean])
            cache.std = torch.cat([cache.std, flipped.std])
        return cache

    def _emit(self, phase: str, step: int, **kw) -> None:
        self.progress(TrainProgress(phase, step=step, total_steps=self.config.steps,
                                    elapsed=time.monotonic() - self.start,
                                    validation_images=list(self.validation_images), **kw))

    def execute(self) -> TrainResult:
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import cast_training_params

        cfg, pipe, device = self.config, self.pipe, self.device
        class_images = None
        if cfg.with_prior_preservation:
            class_images = self._class_images()
            if class_images is None:
                return self._cancelled(0)

        accelerator = new_accelerator(self.precision, device)
        unet, vae, text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
        noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.target_kind = prediction_type(noise_scheduler)
        for model in (unet, vae, text_encoder):
            model.requires_grad_(False)

        # Latents and (frozen-encoder) prompt embeddings never change: encode them once.
        instance_latents = self._latents(self.instance.pixels)
        class_latents = self._latents(class_images.pixels) if class_images else None
        vae.to(device if cfg.validation_every else "cpu")
        instance_ids = tokenize(pipe.tokenizer, [cfg.instance_prompt]).to(device)
        class_ids = (tokenize(pipe.tokenizer, [cfg.class_prompt]).to(device)
                     if class_images else None)

        if self.weight_dtype != torch.float32:
            cast_frozen(unet, self.weight_dtype)
            cast_frozen(text_encoder, self.weight_dtype)
        torch.manual_seed(cfg.seed)  # LoRA init is identical on every process
        add_lora(unet, cfg.rank, UNET_TARGETS)
        if cfg.train_text_encoder:
            add_lora(text_encoder, cfg.rank, TEXT_ENCODER_TARGETS)
        # Trainable LoRA weights stay fp32 under mixed precision, so the optimizer and the
        # grad scaler work on fp32 (no "Attempting to unscale FP16 gradients").
        cast_training_params([unet, text_encoder], dtype=torch.float32)
        apply_speedups(unet, text_encoder, cfg, device)

        params = [{"params": [p for p in unet.parameters() if p.requires_grad],
                   "lr": cfg.learning_rate}]
        cached_embeds = None
        if cfg.train_text_encoder:
            params.append({"params": [p for p in text_encoder.parameters() if p.requires_grad],
                           "lr": cfg.text_encoder_lr})
            text_encoder.train()
        else:
            with torch.no_grad(), accelerator.autocast():
                cached_embeds = {
                    "instance": text_encoder(instance_ids)[0],
                    "class": text_encoder(class_ids)[0] if class_ids is not None else None,
                }
        unet.train()
        optimizer = make_optimizer(params, cfg.use_8bit_adam)
        lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer=optimizer,
                                     num_warmup_steps=cfg.lr_warmup_steps,
                                     num_training_steps=cfg.steps)
        models = [unet, text_encoder] if cfg.train_text_encoder else [unet]
        prepared = accelerator.prepare(*models, optimizer, lr_scheduler)
        unet = prepared[0]
        if cfg.train_text_encoder:
            text_encoder = prepared[1]
        optimizer, lr_scheduler = prepared[-2], prepared[-1]
        trainable = [p for group in params for p in group["params"]]

        # Each process draws its own data and noise (data parallel); one seed per process.
        generator = torch.Generator().manual_seed(cfg.seed + accelerator.process_index)
        batches = Batches(len(self.instance.pixels), cfg.batch_size, generator)
        class_batches = (Batches(len(class_images.pixels), cfg.batch_size, generator)
                         if class_latents else None)
        first_step = 0
        if cfg.resume:
            first_step = self._resume(accelerator, unet, text_encoder, optimizer, lr_scheduler,
                                      generator, batches, class_batches)

        train_start, step = time.monotonic(), first_step
        for step in range(first_step, cfg.steps):
            if self.cancel.is_set():
                self._checkpoint(accelerator, step, unet, text_encoder, optimizer,
                                 lr_scheduler, generator, batches, class_batches)
                return self._cancelled(step)
            inst = batches.next()
            latents = instance_latents.sample(self._orient(inst, instance_latents, generator),
                                              generator)
            ids = instance_ids.repeat(cfg.batch_size, 1)
            embeds = (cached_embeds["instance"].repeat(cfg.batch_size, 1, 1)
                      if cached_embeds else None)
            if class_latents is not None:
                cls = class_batches.next()
                latents = torch.cat([latents, class_latents.sample(
                    self._orient(cls, class_latents, generator), generator)])
                ids = torch.cat([ids, class_ids.repeat(cfg.batch_size, 1)])
                if cached_embeds:
                    embeds = torch.cat(
                        [embeds, cached_embeds["class"].repeat(cfg.batch_size, 1, 1)])
            latents = latents.to(device)
            noise = torch.randn(latents.shape, generator=generator).to(device)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps,
                                      (latents.shape[0],), generator=generator).to(device)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            with accelerator.autocast():
                if embeds is None:
                    embeds = text_encoder(ids)[0]
                pred = unet(noisy.to(self.weight_dtype), timesteps, embeds).sample
            target = (noise_scheduler.get_velocity(latents, noise, timesteps)
                      if self.target_kind == "v_prediction" else noise)
            loss = self._loss(pred.float(), target.float(), class_latents is not None)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"The loss became {loss.item()} at step {step + 1}; training stopped and "
                    "no LoRA was written (any earlier LoRA is untouched). Lower the learning "
                    "rate, or use bf16/no mixed precision instead of fp16."
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            self.losses.append(loss.item())
            done = step + 1
            if done % 10 == 0 or done == cfg.steps:
                log.info("step %d/%d loss %.5f", done, cfg.steps, self.losses[-1])
            per_step = (time.monotonic() - train_start) / (done - first_step)
            self._emit("training", done, loss=self.losses[-1],
                       eta_seconds=per_step * (cfg.steps - done),
                       message=f"Step {done}/{cfg.steps}")
            # Validate first, so the checkpoint of this step lists its validation image.
            if (cfg.validation_every and done % cfg.validation_every == 0
                    and accelerator.is_main_process):
                self._validate(accelerator, done)
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                self._checkpoint(accelerator, done, unet, text_encoder, optimizer, lr_scheduler,
                                 generator, batches, class_batches)
        steps_per_second = (cfg.steps - first_step) / max(time.monotonic() - train_start, 1e-9)
        return self._finish(accelerator, unet, text_encoder, steps_per_second)

    # ---- pieces of the loop -----------------------------------------------------------
    def _orient(self, indices, cache, generator):
        """With flips on, half of the cached latents are the mirrored images."""
        if not self.config.flip:
            return indices
        n = len(cache) // 2
        flips = torch.randint(0, 2, (len(indices),), generator=generator)
        return indices + flips * n

    def _loss(self, pred, target, with_prior: bool):
        if not with_prior:
            return F.mse_loss(pred, target)
        pred, class_pred = pred.chunk(2)
        target, class_target = target.chunk(2)
        return F.mse_loss(pred, target) + self.config.prior_loss_weight * F.mse_loss(
            class_pred, class_target)

    def _validate(self, accelerator, step: int) -> None:
        cfg = self.config
        self._emit("validation", step, loss=self.losses[-1],
                   message=f"Rendering validation image at step {step}")
        paths = render_validation(
            self.pipe, cfg.validation_prompt or cfg.instance_prompt, step, cfg.output_dir,
            cfg.resolution, cfg.seed, cfg.validation_steps, cfg.num_validation_images,
            autocast=accelerator.autocast(),
        )
        self.validation_images += [str(p) for p in paths]
        log.info("validation images at step %d: %s", step, [p.name for p in paths])

    def _checkpoint(self, accelerator, step, unet, text_encoder, optimizer, lr_scheduler,
                    generator, batches, class_batches) -> None:
        cfg = self.config
        if not cfg.checkpoint_every or step == 0 or not accelerator.is_main_process:
            return
        te = accelerator.unwrap_model(text_encoder) if cfg.train_text_encoder else None
        weights = peft_weights(accelerator.unwrap_model(unet), te)
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "order": list(batches.order),
            "class_order": list(class_batches.order) if class_batches else [],
            "losses": list(self.losses),
            "validation_images": list(self.validation_images),
            "settings": {k: getattr(cfg, k) for k in _RESUME_KEYS},
        }
        path = save_checkpoint(cfg.output_dir, step, weights, state, cfg.keep_checkpoints)
        log.info("checkpoint written: %s", path)

    def _resume(self, accelerator, unet, text_encoder, optimizer, lr_scheduler, generator,
                batches, class_batches) -> int:
        from peft.utils import set_peft_model_state_dict

        cfg = self.config
        checkpoint = latest_checkpoint(cfg.output_dir)
        weights, state = load_checkpoint(checkpoint)
        saved = state.get("settings", {})
        changed = [k for k in _RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
        if changed:
            raise TrainingError(
                f"Cannot resume from {checkpoint.path}: these settings differ from the run "
                f"that wrote it: {', '.join(changed)}. Use the same settings, or start over."
            )
        if state["step"] >= cfg.steps:
            raise TrainingError(
                f"The checkpoint is at step {state['step']}, not before the {cfg.steps} steps "
                "asked for: raise the number of steps to continue training."
            )
        for prefix, model in (("unet.", unet), ("text_encoder.", text_encoder)):
            part = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
            if part:
                set_peft_model_state_dict(accelerator.unwrap_model(model), part)
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        batches.order = list(state["order"])
        if class_batches:
            class_batches.order = list(state["class_order"])
        self.losses = list(state["losses"])
        self.validation_images = list(state.get("validation_images", []))
        log.info("resumed from %s at step %d", checkpoint.path, state["step"])
        self._emit("training", state["step"], message=f"Resumed at step {state['step']}")
        return state["step"]

    def _finish(self, accelerator, unet, text_encoder, steps_per_second) -> TrainResult:
        cfg = self.config
        self._emit("saving", cfg.steps, loss=self.losses[-1], message="Saving LoRA")
        accelerator.wait_for_everyone()
        lora_path = kohya_path = None
        if accelerator.is_main_process:
            unet = accelerator.unwrap_model(unet)
            te = accelerator.unwrap_model(text_encoder) if cfg.train_text_encoder else None
            weights = peft_weights(unet, te)
            info = self._info(steps_per_second)
            lora_path = save_lora(cfg.output_dir, *lora_state_dicts(weights), info)
            if cfg.export_kohya:
                kohya_path = export_kohya(weights, cfg.rank,
                                          cfg.output_dir / subject_file_name(info["subject_name"]),
                                          info)
        accelerator.free_memory()
        seconds = time.monotonic() - self.start
        message = f"Training finished in {seconds:.0f} s: LoRA saved to {lora_path}"
        self._emit("done", cfg.steps, loss=self.losses[-1], eta_seconds=0.0, message=message)
        return TrainResult("completed", cfg.output_dir, lora_path, cfg.steps, self.losses[-1],
                           seconds, self.losses, self.skipped, message, kohya_path,
                           steps_per_second)

    def _info(self, steps_per_second: float) -> dict:
        cfg = self.config
        words = cfg.instance_prompt.split()
        return {
            "format": "diffusers-lora",
            "config": cfg.to_dict(),
            "mixed_precision_used": self.precision,
            "prediction_type": self.target_kind,
            "steps_done": cfg.steps,
            "final_loss": self.losses[-1],
            "mean_loss_last_10": sum(self.losses[-10:]) / len(self.losses[-10:]),
            "seconds": round(time.monotonic() - self.start, 2),
            "steps_per_second": round(steps_per_second, 4),
            "device": str(self.device),
            "identifier": words[-2] if len(words) >= 2 else cfg.instance_prompt,
            "subject_name": cfg.subject_name or Path(cfg.output_dir).name,
            "validation_images": [Path(p).name for p in self.validation_images],
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def _cancelled(self, step: int) -> TrainResult:
        cfg = self.config
        seconds = time.monotonic() - self.start
        resumable = " A checkpoint was kept: resume to continue." if (
            cfg.checkpoint_every and step > 0) else ""
        message = (f"Training cancelled after {step} of {cfg.steps} steps; no LoRA was written "
                   f"(anything already in {cfg.output_dir} is untouched).{resumable}")
        loss = self.losses[-1] if self.losses else None
        self._emit("cancelled", step, loss=loss, message=message)
        return TrainResult("cancelled", cfg.output_dir, None, step, loss, seconds,
                           self.losses, self.skipped, message)
