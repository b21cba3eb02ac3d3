"""Class images for prior preservation: reuse what on disk was made alike, generate only
what is missing, and record how each new one was made."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import GenerateConfig, TrainConfig, default_of
from ..core.devices import auto_mixed_precision, pick_device
from ..core.files import atomic_write_json
from ..core.models import describe_source
from ..generate.eta import StepClock
from ..generate.previews import PreviewFn, is_preview_step, preview_for
from .class_gallery import RECORD, list_class_images, read_record
from .validation import vae_decode_in_fp32

# A fast multistep sampler (DPM-Solver++, ~25 steps) gives class-prior images of the same
# quality as 50 PNDM steps at half the cost.
SAMPLER = "DPM++ 2M"
# Class images are drawn without one; recorded so that a future one counts as a difference.
NEGATIVE_PROMPT = ""
_PRECISION_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass
class ClassImageProgress:
    done: int  # usable class images so far, those already on disk included
    total: int  # wanted
    drawing: int = 0  # images of the batch being drawn (0 between batches)
    step: int = 0
    steps: int = 0
    seconds_left: float | None = None  # None until the pace is known


def class_image_recipe(model: str | None, class_prompt: str, resolution: int,
                       steps: int = default_of(TrainConfig, "class_image_steps"),
                       autocast_dtype: torch.dtype | None = None) -> dict:
    """How a run's class images are made: what class_images.json records for each."""
    if model and describe_source(model) in ("folder", "file"):
        model = str(Path(model).expanduser().resolve())  # './m' and '/abs/m' are one model
    return {"model": model, "class_prompt": class_prompt, "negative_prompt": NEGATIVE_PROMPT,
            "resolution": resolution, "sampler": SAMPLER, "steps": steps,
            "precision": _PRECISION_NAMES.get(autocast_dtype, "no")}


def planned_recipe(model: str | None, class_prompt: str, resolution: int,
                   device: str | None = None,
                   mixed_precision: str = default_of(TrainConfig, "mixed_precision"),
                   class_image_steps: int = default_of(TrainConfig, "class_image_steps"),
                   ) -> dict:
    """The recipe of the class images a run with these TrainConfig settings on `device`
    would make, its 'auto' precision resolved as the trainer resolves it: what the Train
    tab's gallery judges the folder by, so that it counts what the run will use."""
    if mixed_precision == "auto":
        mixed_precision = auto_mixed_precision(pick_device(device))
    dtype = next((d for d, name in _PRECISION_NAMES.items() if name == mixed_precision), None)
    return class_image_recipe(model, class_prompt, resolution, class_image_steps, dtype)


def _record(class_dir: Path, made: dict[str, dict]) -> None:
    record = read_record(class_dir)
    images = record.get("images") if isinstance(record.get("images"), dict) else {}
    if "images" not in record and "class_prompt" in record:
        # Images of the older record keep what it knew of them, as their own entries.
        legacy = list_class_images(class_dir, 0)
        images = {i.path.name: i.recipe for i in legacy.images if i.generated}
    atomic_write_json(class_dir / RECORD, {"images": {**images, **made}})


def generate_missing_class_images(
    pipe,
    class_dir: Path,
    class_prompt: str,
    num_images: int,
    resolution: int,
    seed: int = default_of(TrainConfig, "seed"),
    steps: int = default_of(TrainConfig, "class_image_steps"),
    batch_size: int = default_of(TrainConfig, "class_image_batch_size"),
    progress: Callable[[ClassImageProgress], None] | None = None,
    cancel: threading.Event | None = None,
    autocast_dtype: torch.dtype | None = None,
    model: str | None = None,
    preview: PreviewFn | None = None,
    preview_every: int = default_of(GenerateConfig, "preview_every"),
) -> int:
    """Fill `class_dir` up to `num_images` images usable for this recipe; return how many
    new. Images made differently stay on disk (another run may want them) but do not count.

    These images usually cost more than the training itself. `autocast_dtype` (the run's
    mixed precision) halves their cost on bf16-capable CPUs and GPUs, as diffusers'
    --prior_generation_precision does. `model` names the base model in the record
    (default: the folder or id the pipeline was loaded from). `progress` hears after every
    sampler step, `preview` gets the batch forming every `preview_every` steps.
    """
    from diffusers import DPMSolverMultistepScheduler

    class_dir = Path(class_dir)
    class_dir.mkdir(parents=True, exist_ok=True)
    model = model or getattr(pipe, "name_or_path", None)
    recipe = class_image_recipe(model, class_prompt, resolution, steps, autocast_dtype)
    present = list_class_images(class_dir, num_images, recipe)
    have, missing, first = len(present.usable), present.missing, present.next_index
    if missing == 0:
        return 0
    original_scheduler = pipe.scheduler
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    made = 0
    clock = StepClock(math.ceil(missing / batch_size) * steps)
    picture = preview_for(pipe) if preview is not None and preview_every else None
    report = progress or (lambda p: None)

    def on_step_end(pipeline, step, timestep, kwargs):
        done = min(step + 1, steps)
        left = clock.tick(made // batch_size * steps + done)
        report(ClassImageProgress(have + made, num_images, n, done, steps, left))
        if cancel is not None and cancel.is_set():
            pipeline._interrupt = True
        elif picture is not None and is_preview_step(step + 1, preview_every, steps):
            preview(picture(kwargs["latents"]), done, steps)
        return kwargs

    try:
        while made < missing:
            if cancel is not None and cancel.is_set():
                break
            n = min(batch_size, missing - made)
            # One generator per image so each file is reproducible from its record alone.
            seeds = [seed + first + made + i for i in range(n)]
            generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
            with torch.autocast(pipe.device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype not in (None, torch.float32)), \
                    vae_decode_in_fp32(pipe):
                images = pipe(
                    [class_prompt] * n,
                    num_inference_steps=steps,
                    height=resolution,
                    width=resolution,
                    generator=generators,
                    callback_on_step_end=on_step_end,
                ).images
            if cancel is not None and cancel.is_set():
                break  # half-denoised: not class images
            batch = {}
            for image, image_seed in zip(images, seeds, strict=True):
                name = f"class_{first + made:04d}.png"
                image.save(class_dir / name)
                batch[name] = {**recipe, "seed": image_seed}
                made += 1
            # Recorded batch by batch: a run cancelled half-way leaves no unknown images.
            _record(class_dir, batch)
            report(ClassImageProgress(have + made, num_images, 0, 0, steps,
                                      clock.seconds_left))
    finally:
        pipe.scheduler = original_scheduler
    return made
