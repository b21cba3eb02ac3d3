"""Validation images during training: the current LoRA at a fixed seed, so that images
from step to step differ only by what was learned."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch


@contextmanager
def vae_decode_in_fp32(pipe):
    """On SDXL, the VAE decode inside the pipeline call runs in fp32, outside the run's
    autocast: SDXL's VAE overflows in fp16 (black or NaN images). SD 1.x is left as it is."""
    vae = pipe.vae
    if getattr(pipe, "text_encoder_2", None) is None:
        yield
        return
    own = vae.__dict__.get("decode")
    decode = vae.decode

    def fp32_decode(latents, *args, **kwargs):
        with torch.autocast(latents.device.type, enabled=False):
            return decode(latents.to(vae.dtype), *args, **kwargs)

    vae.decode = fp32_decode
    try:
        yield
    finally:
        if own is None:
            del vae.decode
        else:
            vae.decode = own


def draw_current(pipe, prompts: list[str], seeds: list[int], resolution: int, steps: int,
                 autocast=None) -> list:
    """One image per prompt (image i at seeds[i]) with the pipeline's current (training)
    weights; the models go back to training mode afterwards. Validation and checkpoint
    scoring both draw so."""
    from diffusers import DPMSolverMultistepScheduler

    original = pipe.scheduler
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(original.config)
    models = [m for m in (pipe.unet, pipe.text_encoder, getattr(pipe, "text_encoder_2", None))
              if m is not None]
    was_training = [m.training for m in models]
    for model in models:
        model.eval()
    try:
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        with torch.no_grad(), autocast or nullcontext(), vae_decode_in_fp32(pipe):
            return pipe(list(prompts), num_inference_steps=steps, height=resolution,
                        width=resolution, generator=generators).images
    finally:
        pipe.scheduler = original
        for model, training in zip(models, was_training, strict=True):
            model.train(training)


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
