"""DreamBooth + LoRA training loop (Ruiz et al. 2022), with optional prior preservation.

One call of `train` trains one run (its output folder) as a TrainingSession that goes
through numbered stages (see `_execute`): class images, models, cached inputs, LoRA and
optimizer, resume, the loop (one step is step.py), and saving the LoRA atomically. The
stages keep their results on the session, so checkpoints (resume.py) take it whole.
Progress goes to a callback; a threading.Event cancels within one step. Under `accelerate
launch` (or torchrun) each process draws its own data, gradients are averaged, and only the
main process writes.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import torch

from ..config import TrainConfig
from ..core.cpu_memory import reuse_freed_memory
from ..core.devices import auto_mixed_precision, release_memory
from ..core.families import pipeline_family
from ..core.models import load_pipeline, prediction_type
from ..errors import TrainingError
from ..lora.embeddings import save_embedding
from ..lora.files import lora_state_dicts, save_lora
from ..lora.kohya import export_kohya, kohya_path
from ..workspace.runs import run_log_path
from .captions import captioned_prompts, set_instance_prompts
from .checkpoints import Checkpoint
from .class_gallery import describe_recipe, list_class_images
from .class_images import (
    ClassImageProgress,
    class_image_recipe,
    generate_missing_class_images,
)
from .conditioning import time_ids_for
from .events import ProgressFn, TrainProgress, TrainResult
from .identifiers import identifier_of, refuse_identifier_in_class_prompt
from .latents import (
    LatentCache,
    LoadedImages,
    face_weight_maps,
    load_image_files,
    load_images,
)
from .model_stage import attach_lora_and_optimizer, load_models, trained_weights
from .pivotal import trained_rows, trained_rows_2
from .resume import check_resumable, restore_session, save_session, tidy_run_folder
from .scoring import score_checkpoint
from .session import TrainingSession
from .setup import is_main_process, run_device
from .step import training_step
from .validation import render_validation

log = logging.getLogger("dreamstudio.training")

def _attach_log_file(output_dir: Path) -> logging.Handler:
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_log_path(output_dir), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def train(
    config: TrainConfig,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Run one DreamBooth LoRA training; see module docstring."""
    progress = progress or (lambda p: None)
    cancel = cancel or threading.Event()
    device = run_device(config.device)
    precision = config.mixed_precision
    if precision == "auto":
        precision = auto_mixed_precision(device)
    if precision == "fp16" and device.type == "cpu":
        raise TrainingError("fp16 mixed precision needs a GPU; use bf16 or no on the CPU.")
    # Only the main process writes: the others would tidy away its files, log lines twice.
    main = is_main_process()
    if main:
        tidy_run_folder(config)
    # A resume that cannot work is refused before minutes of model loading.
    checkpoint = check_resumable(config) if config.resume else None
    handler = _attach_log_file(config.output_dir) if main else logging.NullHandler()
    try:
        log.info("run starting: %s (mixed precision %s, device %s)", config.to_dict(),
                 precision, device)
        progress(TrainProgress("loading", total_steps=config.steps, message="Loading base model"))
        instance = load_images(config.instance_dir, config.resolution, "instance")
        pipe = load_pipeline(config.model, device, torch.float32, config.model_config_dir,
                             config.vae)
        # Refused before the class images, which can take longer than the training itself.
        prediction_type(pipe.scheduler, config.model)
        # The config could only guess the identifier; the tokenizer knows the rare token.
        refuse_identifier_in_class_prompt(config.instance_prompt, config.class_prompt,
                                          pipe.tokenizer)
        session = TrainingSession(config, pipe, instance, device, precision, progress, cancel)
        with reuse_freed_memory(device):
            result = _execute(session, checkpoint)
        log.info("run ended: %s", result.message)
        return result
    except Exception as exc:
        log.error("run failed: %s", exc)
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
        pipe = session = None
        release_memory()


def _execute(session: TrainingSession, checkpoint: Checkpoint | None) -> TrainResult:
    """The stages of a session, in order; `checkpoint` is the one to resume from, if any."""
    cfg = session.config

    # 1. Class images (prior prediction needs none)
    if cfg.uses_class_images:
        session.class_images = _class_images(session)
        if session.class_images is None:
            return _cancelled(session, 0)

    # 2. Accelerator and models
    load_models(session)

    # 3. Cached latents and prompt embeddings
    _cache_inputs(session)

    # 4. LoRA and optimizer
    attach_lora_and_optimizer(session)

    # 5. Resume
    first_step = restore_session(session, checkpoint) if checkpoint else 0

    # 6. Train
    train_start = time.monotonic()
    for step in range(first_step, cfg.steps):
        if session.cancel.is_set():
            save_session(session, step)
            return _cancelled(session, step)
        if session.pivotal:
            session.pivotal.set_step(step, cfg.steps, cfg.pivotal_stop)
        session.losses.append(training_step(session, step))
        done = step + 1
        _report_step(session, done, (time.monotonic() - train_start) / (done - first_step))
        # Validate first, so the checkpoint of this step lists its validation image.
        if (cfg.validation_every and done % cfg.validation_every == 0
                and session.accelerator.is_main_process):
            _validate(session, done)
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            score_checkpoint(session, done)  # before saving: the checkpoint keeps its score
            save_session(session, done)
    steps_per_second = (cfg.steps - first_step) / max(time.monotonic() - train_start, 1e-9)
    score_checkpoint(session, cfg.steps)  # the final LoRA

    # 7. Save
    return _finish(session, steps_per_second)


def _class_images(session: TrainingSession) -> LoadedImages | None:
    """The class images, the missing ones generated first; None if cancelled meanwhile."""
    from accelerate import PartialState

    cfg = session.config

    forming: list = [None]  # the latest preview of the batch being drawn

    def show(pictures, step, steps):
        forming[0] = pictures[0]

    def report(p: ClassImageProgress):
        drawing = f" · drawing {p.drawing} more, step {p.step}/{p.steps}" if p.drawing else ""
        session.emit("class_images", 0, message=f"Class images: {p.done}/{p.total}{drawing}",
                     eta_seconds=p.seconds_left, preview=forming[0] if p.drawing else None)

    recipe = class_image_recipe(cfg.model, cfg.class_prompt, cfg.resolution,
                                cfg.class_image_steps, session.weight_dtype)
    # Under several processes only the first generates; the others then find the images.
    with PartialState().main_process_first():
        made = generate_missing_class_images(
            session.pipe, cfg.class_dir, cfg.class_prompt, cfg.num_class_images,
            cfg.resolution, seed=cfg.seed, steps=cfg.class_image_steps,
            batch_size=cfg.class_image_batch_size, progress=report, cancel=session.cancel,
            preview=show,
            autocast_dtype=session.weight_dtype, model=cfg.model,
        )
    if session.cancel.is_set():
        return None
    present = list_class_images(cfg.class_dir, cfg.num_class_images, recipe)
    if present.mismatched:
        others = sorted({describe_recipe(i.recipe) for i in present.mismatched})
        note = (f"{len(present.mismatched)} class images in {cfg.class_dir} were made "
                f"differently ({'; '.join(others)}) and are not used: this run wants "
                f"{describe_recipe(recipe)}.")
        log.warning(note)
        session.emit("class_images", 0, message=note)
    log.info("class images: %d generated now; training on %d of %d usable (%d yours) in %s",
             made, len(present.chosen), len(present.usable), present.supplied, cfg.class_dir)
    loaded = load_image_files(present.chosen, cfg.resolution, "class", cfg.class_dir)
    session.skipped += [(str(p), r) for p, r in loaded.skipped]
    return loaded


def _latents(session: TrainingSession, pixels: torch.Tensor) -> LatentCache:
    vae, device = session.vae, session.device
    cache = LatentCache(vae, pixels, device, torch.float32)
    if session.config.flip:
        # Both orientations cached: a flip is then a free index choice at train time.
        flipped = LatentCache(vae, pixels.flip(-1), device, torch.float32)
        cache.mean = torch.cat([cache.mean, flipped.mean])
        cache.std = torch.cat([cache.std, flipped.std])
    return cache


def _cache_inputs(session: TrainingSession) -> None:
    """Latents and (frozen-encoder) prompt embeddings never change: encode them once."""
    s, cfg = session, session.config
    s.instance_latents = _latents(s, s.instance.pixels)
    if s.class_images:
        s.class_latents = _latents(s, s.class_images.pixels)
    s.vae.to(s.device if cfg.validation_every or cfg.score_checkpoints else "cpu")
    if cfg.face_weighted:
        s.face_weights = face_weight_maps(
            cfg.instance_dir, s.instance.files, s.instance_latents.mean.shape[-1],
            cfg.face_loss_weight, cfg.face_outside_weight, mirrored=cfg.flip)
    if s.sdxl:
        s.instance_time_ids = time_ids_for(cfg.instance_dir, s.instance, cfg.resolution,
                                           mirrored=cfg.flip)
        if s.class_images:
            s.class_time_ids = time_ids_for(None, s.class_images, cfg.resolution,
                                            mirrored=cfg.flip)
    set_instance_prompts(s)
    if s.class_images or s.prior_prediction:
        s.class_ids = s.text.tokenize([cfg.class_prompt]).to(s.device)
    if s.prior_prediction:
        # Encoded before any LoRA is attached: the base model's class embedding.
        with torch.no_grad(), s.accelerator.autocast():
            s.base_class_embeds = s.text.encode(s.class_ids)
    # A trained embedding changes the instance prompt's embeddings at every step.
    if not cfg.train_text_encoder and not s.pivotal:
        with torch.no_grad(), s.accelerator.autocast():
            s.cached_embeds = {
                "instance": s.text.encode(s.instance_ids),
                "class": s.text.encode(s.class_ids) if s.class_ids is not None else None,
            }


def _report_step(session: TrainingSession, done: int, per_step: float) -> None:
    steps, loss = session.config.steps, session.losses[-1]
    if done % 10 == 0 or done == steps:
        log.info("step %d/%d loss %.5f", done, steps, loss)
    session.emit("training", done, loss=loss, eta_seconds=per_step * (steps - done),
                 message=f"Step {done}/{steps}")


def _validate(session: TrainingSession, step: int) -> None:
    cfg = session.config
    session.emit("validation", step, loss=session.losses[-1],
                 message=f"Rendering validation image at step {step}")
    paths = render_validation(
        session.pipe, session.prompt(cfg.validation_prompt or cfg.instance_prompt), step,
        cfg.output_dir,
        cfg.resolution, cfg.seed, cfg.validation_steps, cfg.num_validation_images,
        autocast=session.accelerator.autocast(),
    )
    session.validation_images += [str(p) for p in paths]
    log.info("validation images at step %d: %s", step, [p.name for p in paths])


def _finish(session: TrainingSession, steps_per_second: float) -> TrainResult:
    """Save the LoRA (and its kohya copy) from the main process; the session's result."""
    cfg, accelerator = session.config, session.accelerator
    session.emit("saving", cfg.steps, loss=session.losses[-1], message="Saving LoRA")
    accelerator.wait_for_everyone()
    lora_path = kohya_file = None
    if accelerator.is_main_process:
        weights = trained_weights(session)
        info = _info(session, steps_per_second)
        if session.pivotal:  # written first: a LoRA whose record names it finds it there
            info["pivotal"] = save_embedding(cfg.output_dir, session.pivotal.token,
                                             session.pivotal.identifier,
                                             trained_rows(session.pivotal),
                                             trained_rows_2(session.pivotal))
        lora_path = save_lora(cfg.output_dir, *lora_state_dicts(weights), info)
        if cfg.export_kohya:
            kohya_file = export_kohya(weights, cfg.alpha, kohya_path(cfg.output_dir, info), info)
    accelerator.free_memory()
    seconds = time.monotonic() - session.start
    saved = (f"LoRA saved to {lora_path}" if accelerator.is_main_process else
             f"process {accelerator.process_index} done; the main process saved the LoRA")
    message = f"Training finished in {seconds:.0f} s: {saved}"
    if session.fidelity_note:
        message += f" {session.fidelity_note}"
    session.emit("done", cfg.steps, loss=session.losses[-1], eta_seconds=0.0, message=message)
    return TrainResult("completed", cfg.output_dir, lora_path, cfg.steps, session.losses[-1],
                       seconds, session.losses, session.skipped, message, kohya_file,
                       steps_per_second)


def _info(session: TrainingSession, steps_per_second: float) -> dict:
    """The record saved beside the LoRA weights: how it was trained, for the app to show."""
    cfg, losses = session.config, session.losses
    return {
        "format": "diffusers-lora",
        "config": cfg.to_dict(),
        "mixed_precision_used": session.precision,
        "prediction_type": session.target_kind,
        "family": pipeline_family(session.pipe),
        "steps_done": cfg.steps,
        "final_loss": losses[-1],
        "mean_loss_last_10": sum(losses[-10:]) / len(losses[-10:]),
        "seconds": round(time.monotonic() - session.start, 2),
        "steps_per_second": round(steps_per_second, 4),
        "device": str(session.device),
        "identifier": identifier_of(cfg.instance_prompt, cfg.class_prompt,
                                    session.pipe.tokenizer),
        "subject_name": cfg.subject_name or Path(cfg.output_dir).name,
        "validation_images": [Path(p).name for p in session.validation_images],
        # The prompt each captioned photo trained on, by crop name (empty: none had one).
        "captions": captioned_prompts(session),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _cancelled(session: TrainingSession, step: int) -> TrainResult:
    cfg, losses = session.config, session.losses
    seconds = time.monotonic() - session.start
    resumable = " A checkpoint was kept: resume to continue." if (
        cfg.checkpoint_every and step > 0) else ""
    message = (f"Training cancelled after {step} of {cfg.steps} steps; no LoRA was written "
               f"(anything already in {cfg.output_dir} is untouched).{resumable}")
    loss = losses[-1] if losses else None
    session.emit("cancelled", step, loss=loss, message=message)
    return TrainResult("cancelled", cfg.output_dir, None, step, loss, seconds,
                       losses, session.skipped, message)
