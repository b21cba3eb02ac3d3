"""Generation benchmark: `python -m bench.generation --model DIR [--lora DIR] ...`.

Prints figures and writes JSON (--json): the time for one image, the time from a slider
change (a new UNet / text-encoder LoRA scale; the guidance when no LoRA is given) to the
next image, and the same two with a plain diffusers StableDiffusionPipeline call of the
same settings (same seed, same scheduler, the LoRA loaded with load_lora_weights and its
scales set with set_adapters). It also reports the model and LoRA load counters (a slider
change must load nothing) and whether both paths drew the very same pixels, and what
previews of the image forming cost (bench/previews.py).

The two paths run alternately, image for image, so a machine that gets busier or quieter
during the run affects both alike. Figures are medians and bests (minimum) over --repeats;
on a machine shared with other work the best is the steadier measure of the code's cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dreamstudio.config import GenerateConfig
from dreamstudio.generate.generator import Generator
from dreamstudio.generate.samplers import DEFAULT_SAMPLER, SAMPLER_NAMES, make_scheduler
from dreamstudio.lora.adapters import ADAPTER_NAME

from .previews import format_preview_cost, preview_cost

PROMPT = "a photo of sks dog on a beach"
# Slider positions visited in turn: every change moves at least one scale.
SCALES = [(0.5, 1.0), (1.0, 0.5), (0.8, 0.2), (1.2, 0.9), (0.3, 0.6), (1.0, 1.0)]
GUIDANCES = [5.0, 9.0, 6.5, 11.0, 4.0, 7.5]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device):
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


class PlainDiffusers:
    """The reference: what a diffusers user writes, with nothing cached beyond the pipe."""

    def __init__(self, model: str, lora: Path | None, sampler: str, device: torch.device,
                 dtype: torch.dtype):
        from diffusers import StableDiffusionPipeline

        self.device = device
        self.pipe = StableDiffusionPipeline.from_pretrained(
            model, dtype=dtype, safety_checker=None, requires_safety_checker=False).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        if lora is not None:
            self.pipe.load_lora_weights(str(lora), adapter_name=ADAPTER_NAME)
        if sampler != DEFAULT_SAMPLER:
            # make_scheduler is exactly `cls.from_config(pipe.scheduler.config, **settings)`.
            self.pipe.scheduler = make_scheduler(sampler, self.pipe.scheduler)

    def image(self, config: GenerateConfig):
        if config.lora_dir is not None:
            self.pipe.set_adapters(ADAPTER_NAME, adapter_weights={
                "unet": config.unet_scale, "text_encoder": config.text_encoder_scale})
        return self.pipe(
            config.prompt, negative_prompt=config.negative_prompt or None,
            num_inference_steps=config.steps, guidance_scale=config.guidance,
            height=config.height, width=config.width,
            generator=torch.Generator("cpu").manual_seed(config.seed),
        ).images[0]


def _changes(config: GenerateConfig, repeats: int) -> list[GenerateConfig]:
    if config.lora_dir is None:
        return [dataclasses.replace(config, guidance=GUIDANCES[i % len(GUIDANCES)])
                for i in range(repeats)]
    return [dataclasses.replace(config, unet_scale=u, text_encoder_scale=t)
            for u, t in (SCALES[i % len(SCALES)] for i in range(repeats))]


def run_benchmark(model: str, lora: Path | None = None, steps: int = 20,
                  height: int | None = None, width: int | None = None,
                  sampler: str = DEFAULT_SAMPLER, repeats: int = 3, device: str | None = None,
                  prompt: str = PROMPT) -> dict:
    config = GenerateConfig(prompt=prompt, lora_dir=lora, steps=steps, height=height,
                            width=width, sampler=sampler, seed=0)
    generator = Generator(model, device=device)
    dev = generator.device

    from diffusers import StableDiffusionPipeline  # noqa: F401 - imports outside the timings
    from transformers import CLIPTextModel  # noqa: F401

    if lora is not None:
        import peft  # noqa: F401 - the first LoRA load would otherwise pay for this import

    model_s, _ = _timed(lambda: generator.pipeline, dev)
    first_s, _ = _timed(lambda: generator.generate(config), dev)  # loads the LoRA too
    load_s, plain = _timed(lambda: PlainDiffusers(model, config.lora_dir, sampler, dev,
                                                  generator.dtype), dev)
    plain.image(config)  # warm-up, as our first image was
    loads_before = (generator.model_loads, generator.lora_loads)

    ours_one, theirs_one, ours_slider, theirs_slider = [], [], [], []
    same_pixels = True
    for change in _changes(config, repeats):
        seconds, ours = _timed(lambda: generator.generate(config)[0].image, dev)
        ours_one.append(seconds)
        seconds, theirs = _timed(lambda: plain.image(config), dev)
        theirs_one.append(seconds)
        same_pixels &= np.array_equal(np.asarray(ours), np.asarray(theirs))
        ours_slider.append(_timed(lambda c=change: generator.generate(c), dev)[0])
        theirs_slider.append(_timed(lambda c=change: plain.image(c), dev)[0])
    loads_after = (generator.model_loads, generator.lora_loads)
    overhead = _overhead_ms(generator, plain, config)

    def median(values):
        return round(statistics.median(values), 4)

    ours = {"model_load_s": round(model_s, 3), "first_image_s": round(first_s, 3),
            "one_image_s": median(ours_one),
            "slider_change_to_image_s": median(ours_slider),
            "one_image_best_s": round(min(ours_one), 4),
            "slider_change_to_image_best_s": round(min(ours_slider), 4),
            "one_image_runs_s": [round(v, 4) for v in ours_one],
            "slider_runs_s": [round(v, 4) for v in ours_slider],
            "model_loads": loads_after[0], "lora_loads": loads_after[1],
            "loads_during_slider_changes": [a - b for a, b in zip(loads_after, loads_before,
                                                                  strict=True)]}
    theirs = {"load_s": round(load_s, 3), "one_image_s": median(theirs_one),
              "slider_change_to_image_s": median(theirs_slider),
              "one_image_best_s": round(min(theirs_one), 4),
              "slider_change_to_image_best_s": round(min(theirs_slider), 4),
              "one_image_runs_s": [round(v, 4) for v in theirs_one],
              "slider_runs_s": [round(v, 4) for v in theirs_slider]}
    image = generator.generate(config)[0].image
    return {
        "model": model, "lora": str(lora) if lora else None, "device": str(dev),
        "dtype": str(generator.dtype).replace("torch.", ""), "steps": steps,
        "size": f"{image.width}x{image.height}", "sampler": sampler,
        "sampler_name": generator.sampler_name, "repeats": repeats,
        "slider": "unet/text-encoder LoRA scale" if lora else "guidance",
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
        "platform": platform.platform(), "torch": torch.__version__,
        "dreamstudio": ours, "diffusers": theirs,
        "ratio_one_image": round(ours["one_image_s"] / theirs["one_image_s"], 3),
        "ratio_slider_change": round(ours["slider_change_to_image_s"]
                                     / theirs["slider_change_to_image_s"], 3),
        "ratio_one_image_best": round(ours["one_image_best_s"] / theirs["one_image_best_s"], 3),
        "ratio_slider_change_best": round(ours["slider_change_to_image_best_s"]
                                          / theirs["slider_change_to_image_best_s"], 3),
        "identical_pixels": bool(same_pixels),
        "overhead_ms": overhead,
        "previews": preview_cost(generator, config, repeats),
    }


def _overhead_ms(generator: Generator, plain: PlainDiffusers, config: GenerateConfig,
                 n: int = 50) -> dict:
    """What each image costs beyond the pipeline call, timed alone (no sampling noise):
    DreamStudio's LoRA/sampler bookkeeping with unchanged and with changed scales, and
    diffusers' own set_adapters that a plain caller runs for a slider change."""
    changes = _changes(config, n)

    def per_call(fn) -> float:
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        return round((time.perf_counter() - start) / n * 1000, 3)

    figures = {"dreamstudio_same_settings": per_call(lambda i: generator.load_for(config)),
               "dreamstudio_slider_change": per_call(lambda i: generator.load_for(changes[i]))}
    if config.lora_dir is not None:
        figures["diffusers_set_adapters"] = per_call(lambda i: plain.pipe.set_adapters(
            ADAPTER_NAME, adapter_weights={"unet": changes[i].unet_scale,
                                           "text_encoder": changes[i].text_encoder_scale}))
    return figures


def format_report(r: dict) -> str:
    d, p = r["dreamstudio"], r["diffusers"]
    moved = d["loads_during_slider_changes"]
    lines = [
        (f"{r['model']} + {r['lora'] or 'no LoRA'} on {r['device']} ({r['dtype']}), "
         f"{r['size']}, {r['steps']} steps, sampler {r['sampler_name']}, "
         f"{r['repeats']} runs each"),
        f"{'':34}{'DreamStudio':>12}{'diffusers':>12}{'ratio':>8}",
        (f"{'one image, median (s)':34}{d['one_image_s']:>12.3f}{p['one_image_s']:>12.3f}"
         f"{r['ratio_one_image']:>8.3f}"),
        (f"{'one image, best (s)':34}{d['one_image_best_s']:>12.3f}"
         f"{p['one_image_best_s']:>12.3f}{r['ratio_one_image_best']:>8.3f}"),
        (f"{'slider change -> image, median':34}{d['slider_change_to_image_s']:>12.3f}"
         f"{p['slider_change_to_image_s']:>12.3f}{r['ratio_slider_change']:>8.3f}"),
        (f"{'slider change -> image, best':34}{d['slider_change_to_image_best_s']:>12.3f}"
         f"{p['slider_change_to_image_best_s']:>12.3f}{r['ratio_slider_change_best']:>8.3f}"),
        (f"model load: {d['model_load_s']:.2f} s (plain diffusers, with its LoRA: "
         f"{p['load_s']:.2f} s); first image (with the LoRA load): {d['first_image_s']:.2f} s"),
        (f"loads after all runs: model {d['model_loads']}, LoRA {d['lora_loads']} (during "
         f"slider changes: +{moved[0]} model, +{moved[1]} LoRA); same pixels as diffusers: "
         f"{r['identical_pixels']}"),
        "bookkeeping per image beyond the pipeline call (ms): " + ", ".join(
            f"{k} {v:g}" for k, v in r["overhead_ms"].items()),
        format_preview_cost(r["previews"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generation",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Diffusers folder (or Hub id).")
    parser.add_argument("--lora", type=Path, default=None, help="Folder of a trained LoRA.")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=SAMPLER_NAMES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--json", type=Path, default=None, help="Write the figures here.")
    args = parser.parse_args(argv)
    from dreamstudio.errors import DreamStudioError

    try:
        report = run_benchmark(args.model, args.lora, args.steps, args.height, args.width,
                               args.sampler, args.repeats, args.device, args.prompt)
    except DreamStudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
