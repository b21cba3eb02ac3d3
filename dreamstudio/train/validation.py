"""Validation images during training: the current LoRA at a fixed seed, so that images
from step to step differ only by what was learned."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch


def draw_current(pipe, prompts: list[str], seeds: list[int], resolution: int, steps: int,
                 autocast=None) -> list:
    """One image per prompt (image i at seeds[i]) with the pipeline's current (training)
    weights; the models go back to training mode afterwards. Validation and checkpoint
    scoring both draw so."""
    from diffusers import DPMSolverMultistepScheduler

    original = pipe.scheduler
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(original.config)
    was_training = pipe.unet.training, pipe.text_encoder.training
    pipe.unet.eval()
    pipe.text_encoder.eval()
    try:
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        with torch.no_grad(), autocast or nullcontext():
            return pipe(list(prompts), num_inference_steps=steps, height=resolution,
                        width=resolution, generator=generators).images
    finally:
        pipe.scheduler = original
        pipe.unet.train(was_training[0])
        pipe.text_encoder.train(was_training[1])


def render_validation(pipe, prompt: str, step: int, output_dir: Path, resolution: int,
                      seed: int, steps: int, num_images: int,
                      autocast=None) -> list[Path]:
    """Generate `num_images` images with the pipeline's current (training) weights."""
    folder = Path(output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    images = draw_current(pipe, [prompt] * num_images, [seed + i for i in range(num_images)],
                          resolution, steps, autocast)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"step-{step:06d}-{i}.png"
        image.save(path)
        paths.append(path)
    return paths
