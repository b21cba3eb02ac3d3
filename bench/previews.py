"""What previews of an image forming cost, for the generation benchmark (bench.generation).

Two measures: one preview picture timed alone (many times: it is short) times the previews
an image gets at the default cadence, as a share of the image's time; and whole images
with previews on and off, alternately, which is what a user waits for but varies more on
a shared machine.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from dreamstudio.config import GenerateConfig, default_of
from dreamstudio.generate.generator import Generator
from dreamstudio.generate.previews import is_preview_step, preview_for


def preview_cost(generator: Generator, config: GenerateConfig, repeats: int = 3,
                 n: int = 50) -> dict:
    every = default_of(GenerateConfig, "preview_every")
    config = dataclasses.replace(config, preview_every=every)
    pipe = generator.pipeline
    picture = preview_for(pipe, config.preview_decoder)
    height = config.height or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = config.width or pipe.unet.config.sample_size * pipe.vae_scale_factor
    latents = torch.randn(config.num_images, pipe.unet.config.in_channels,
                          height // pipe.vae_scale_factor, width // pipe.vae_scale_factor,
                          device=generator.device, dtype=generator.dtype)
    picture(latents)  # warm-up
    start = time.perf_counter()
    for _ in range(n):
        picture(latents)
    one_ms = (time.perf_counter() - start) / n * 1000
    per_image = sum(is_preview_step(s, every, config.steps) for s in range(1, config.steps + 1))

    figures = {"preview_every": every, "previews_per_image": per_image,
               "one_preview_ms": round(one_ms, 3)}
    if not repeats:
        return figures  # the caller times whole images with previews itself
    shown = []
    on, off = [], []
    for _ in range(repeats):
        for runs, preview in ((off, None), (on, lambda p, s, t: shown.append(p))):
            start = time.perf_counter()
            generator.generate(config, preview=preview)
            runs.append(time.perf_counter() - start)
    image_s = statistics.median(off)
    return {
        **figures,
        "share_of_image_time": round(one_ms / 1000 * per_image / image_s, 5),
        "image_previews_off_s": round(image_s, 4),
        "image_previews_on_s": round(statistics.median(on), 4),
        "image_previews_off_best_s": round(min(off), 4),
        "image_previews_on_best_s": round(min(on), 4),
        "ratio_on_off_best": round(min(on) / min(off), 4),
    }


def format_preview_cost(c: dict) -> str:
    line = (f"previews every {c['preview_every']} steps: {c['previews_per_image']} per image "
            f"at {c['one_preview_ms']:.2f} ms each = {100 * c['share_of_image_time']:.3f} % "
            f"of the image's time")
    if "ratio_on_off_best" not in c:
        return line
    return (f"{line}; whole image best {c['image_previews_on_best_s']:.3f} s "
            f"with previews, {c['image_previews_off_best_s']:.3f} s without "
            f"(x{c['ratio_on_off_best']:.3f})")
