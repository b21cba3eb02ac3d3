"""Generation benchmark: `python -m bench.generation --model DIR [--lora DIR] ...`.

Prints figures and writes JSON (--json): the time from a slider change (a new UNet /
text-encoder LoRA scale; the guidance when no LoRA is given) to the finished image, for
DreamStudio (its 'auto' precision, previews at their default cadence) and for a plain
diffusers StableDiffusionPipeline call of the same settings (same seed and scheduler, the
LoRA loaded with load_lora_weights and its scales set with set_adapters), once in
diffusers' default precision (fp32) and once in DreamStudio's precision. It also reports
how far DreamStudio's image is from the fp32 one (PSNR, largest pixel difference), the cost
of the previews, and the load counters (a slider change must load nothing).

The sides take turns, image for image, so a machine that gets busier or quieter during the
run affects all alike. Figures are medians and bests (minimum) over --repeats.
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
from dreamstudio.core.devices import precision_name
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


def image_difference(image, reference) -> dict:
    """PSNR (dB) and the largest per-channel difference of two 8-bit images."""
    a = np.asarray(image).astype(np.float64)
    b = np.asarray(reference).astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    psnr = round(float(10 * np.log10(255**2 / mse)), 2) if mse else None  # None: identical
    return {"psnr_db": psnr, "identical": mse == 0,
            "max_pixel_difference": int(np.abs(a - b).max()),
            "mean_pixel_difference": round(float(np.abs(a - b).mean()), 3)}


def _figures(runs: list[float]) -> dict:
    return {"slider_change_to_image_s": round(statistics.median(runs), 4),
            "slider_change_to_image_best_s": round(min(runs), 4),
            "slider_runs_s": [round(v, 4) for v in runs]}


def run_benchmark(model: str, lora: Path | None = None, steps: int = 20,
                  height: int | None = None, width: int | None = None,
                  sampler: str = DEFAULT_SAMPLER, repeats: int = 3, device: str | None = None,
                  prompt: str = PROMPT) -> dict:
    config = GenerateConfig(prompt=prompt, lora_dir=lora, steps=steps, height=height,
                            width=width, sampler=sampler, seed=0)
    generator = Generator(model, device=device)
    dev, dtype = generator.device, generator.dtype_for(config.precision)

    from diffusers import StableDiffusionPipeline  # noqa: F401 - imports outside the timings
    from transformers import CLIPTextModel  # noqa: F401

    if lora is not None:
        import peft  # noqa: F401 - the first LoRA load would otherwise pay for this import

    warm_up = dataclasses.replace(config, steps=2)
    model_s, _ = _timed(lambda: generator.pipeline, dev)
    first_s, _ = _timed(lambda: generator.generate(warm_up), dev)  # loads the LoRA too
    # diffusers loads in fp32 unless told otherwise: its default precision everywhere.
    plain = {"fp32": PlainDiffusers(model, lora, sampler, dev, torch.float32)}
    if dtype != torch.float32:
        plain["same"] = PlainDiffusers(model, lora, sampler, dev, dtype)
    for side in plain.values():
        side.image(warm_up)
    loads_before = (generator.model_loads, generator.lora_loads)
    encodes_before = generator.prompt_encodes

    runs: dict[str, list[float]] = {"ours": [], **{k: [] for k in plain}}
    previews: list[int] = []

    def shown(pictures, step, steps):
        previews.append(step)
    last: dict = {}
    for change in _changes(config, repeats):
        # With previews at the default cadence, as the Generate tab shows them.
        seconds, [result] = _timed(lambda c=change: generator.generate(c, preview=shown), dev)
        runs["ours"].append(seconds)
        last["ours"] = result.image
        for name, side in plain.items():
            seconds, last[name] = _timed(lambda c=change, s=side: s.image(c), dev)
            runs[name].append(seconds)
    loads_after = (generator.model_loads, generator.lora_loads)
    overhead = _overhead_ms(generator, plain["fp32"], config)

    ours = {**_figures(runs["ours"]), "model_load_s": round(model_s, 3),
            "first_image_2_steps_s": round(first_s, 3),
            "model_loads": loads_after[0], "lora_loads": loads_after[1],
            "loads_during_slider_changes": [a - b for a, b in zip(loads_after, loads_before,
                                                                  strict=True)],
            "prompt_encodes_during_slider_changes": generator.prompt_encodes - encodes_before}
    report = {
        "model": model, "lora": str(lora) if lora else None, "device": str(dev),
        "dtype": precision_name(dtype), "steps": steps,
        "size": f"{last['ours'].width}x{last['ours'].height}", "sampler": sampler,
        "sampler_name": generator.sampler_name, "repeats": repeats,
        "slider": "unet/text-encoder LoRA scale" if lora else "guidance",
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
        "platform": platform.platform(), "torch": torch.__version__,
        "dreamstudio": ours, "diffusers_fp32": _figures(runs["fp32"]),
        "overhead_ms": overhead,
        "image_vs_fp32": image_difference(last["ours"], last["fp32"]),
        "previews": {**preview_cost(generator, config, repeats=0),
                     "shown_per_image": len(previews) / max(1, repeats)},
    }
    cost = report["previews"]
    cost["share_of_image_time"] = round(cost["one_preview_ms"] / 1000 * cost["previews_per_image"]
                                        / ours["slider_change_to_image_s"], 5)
    report["speedup_vs_diffusers_default"] = round(
        report["diffusers_fp32"]["slider_change_to_image_s"]
        / ours["slider_change_to_image_s"], 3)
    if "same" in plain:
        report["diffusers_same_precision"] = _figures(runs["same"])
        report["speedup_vs_diffusers_same_precision"] = round(
            report["diffusers_same_precision"]["slider_change_to_image_s"]
            / ours["slider_change_to_image_s"], 3)
        report["image_vs_diffusers_same_precision"] = image_difference(last["ours"],
                                                                       last["same"])
    return report


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
    d = r["dreamstudio"]
    moved = d["loads_during_slider_changes"]
    sides = [("DreamStudio (" + r["dtype"] + ")", d),
             ("diffusers, fp32 (its default)", r["diffusers_fp32"])]
    if "diffusers_same_precision" in r:
        sides.append((f"diffusers, {r['dtype']}", r["diffusers_same_precision"]))
    lines = [
        (f"{r['model']} + {r['lora'] or 'no LoRA'} on {r['device']}, {r['size']}, "
         f"{r['steps']} steps, sampler {r['sampler_name']}, {r['repeats']} slider changes each"),
        f"{'slider change -> image':34}{'median s':>10}{'best s':>10}",
        *(f"{name:34}{f['slider_change_to_image_s']:>10.2f}"
          f"{f['slider_change_to_image_best_s']:>10.2f}" for name, f in sides),
        f"speed-up vs diffusers' default: {r['speedup_vs_diffusers_default']:.2f}x"
        + (f"; vs diffusers in {r['dtype']}: {r['speedup_vs_diffusers_same_precision']:.2f}x"
           if "speedup_vs_diffusers_same_precision" in r else ""),
        (f"image vs the fp32 one: PSNR {r['image_vs_fp32']['psnr_db']} dB, largest pixel "
         f"difference {r['image_vs_fp32']['max_pixel_difference']} of 255"),
        (f"model load: {d['model_load_s']:.2f} s; first image (2 steps, with the LoRA load): "
         f"{d['first_image_2_steps_s']:.2f} s"),
        (f"loads during slider changes: +{moved[0]} model, +{moved[1]} LoRA; prompt "
         f"encodes: {d['prompt_encodes_during_slider_changes']}"),
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
