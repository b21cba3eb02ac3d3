"""How long the scored sweep takes at its default size, and what of it is drawing vs scoring.

    python -m bench.sweep --json bench/cpu-sd15-256px-sweep.json

Builds (once, offline) SD 1.5's architecture with random weights, trains a 2-step LoRA of
the DreamBooth dog at 256 px with the app's trainer, builds DINO ViT-S/16 and CLIP
ViT-B/32 with random weights (the real architectures, so scoring costs what it costs with
the real models), then runs the default TuneConfig sweep and prints and writes: the
estimate the sweep gave before it started, the wall time, the time drawing, the time
scoring, the scorers' load time, images drawn and reused. Nothing else should run beside
it (2 cores: a test run beside it doubles the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from tests.support.sample_photos import find_datasets

DATASET = find_datasets()


def build_scorers(directory: Path) -> tuple[Path, Path]:
    """DINO ViT-S/16 and CLIP ViT-B/32 with random weights, saved like the Hub's."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    from dreamstudio.core.clip_vocab import write_clip_tokenizer_files

    dino_dir, clip_dir = directory / "dino-vits16", directory / "clip-vit-base-patch32"
    if not dino_dir.is_dir():
        vit = ViTModel(ViTConfig(image_size=224, patch_size=16, hidden_size=384,
                                 num_hidden_layers=12, num_attention_heads=6,
                                 intermediate_size=1536), add_pooling_layer=False)
        vit.save_pretrained(dino_dir)
        ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(dino_dir)
    if not clip_dir.is_dir():
        CLIPModel(CLIPConfig()).save_pretrained(clip_dir)  # the defaults are ViT-B/32's
        with tempfile.TemporaryDirectory() as tmp:
            write_clip_tokenizer_files(Path(tmp))
            tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
        CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(
            clip_dir)
    return dino_dir, clip_dir


def prepare_run(workdir: Path, model: Path, resolution: int) -> tuple[Path, Path]:
    """The dog's photos prepared as the app does, and a 2-step LoRA run of them."""
    from dreamstudio.config import PrepareConfig, TrainConfig
    from dreamstudio.data.prepare import prepare_photos
    from dreamstudio.lora.files import is_lora_dir
    from dreamstudio.train.trainer import train
    from dreamstudio.workspace.runs import save_run_settings

    photos, run = workdir / "photos", workdir / "run"
    if not photos.is_dir():
        sources = sorted((DATASET / "dog").glob("*.jpg"))
        if not sources:
            raise SystemExit(f"the DreamBooth dog photos are not in {DATASET / 'dog'}")
        prepare_photos(sources, photos, PrepareConfig(mode="object", size=resolution))
    if not is_lora_dir(run):
        config = TrainConfig(model=str(model), instance_dir=photos,
                             instance_prompt="a photo of sks dog", output_dir=run, steps=2,
                             resolution=resolution, validation_every=0)
        save_run_settings(config)
        train(config)
    return photos, run


def run_benchmark(model: Path, workdir: Path, size: int,
                  scorers: tuple[Path, Path] | None = None, steps: int | None = None) -> dict:
    from dreamstudio.generate.generator import Generator
    from dreamstudio.tune.config import TuneConfig
    from dreamstudio.tune.scoring import load_scorers
    from dreamstudio.tune.sweep import plan_sweep, run_sweep, time_sweep

    from .sd15 import save_sd15_architecture

    if not (model / "model_index.json").is_file():
        save_sd15_architecture(model)
    photos, run = prepare_run(workdir, model, size)
    dino_dir, clip_dir = scorers or build_scorers(workdir / "scorers")
    config = TuneConfig(run_dir=run, real_images_dir=photos, height=size, width=size,
                        dino_model=str(dino_dir), clip_model=str(clip_dir),
                        **({"steps": steps} if steps else {}))
    folder = workdir / f"tune-{time.strftime('%Y%m%d-%H%M%S')}"  # a fresh one: no reuse
    generator = Generator(str(model))

    start = time.monotonic()
    plan, cells = plan_sweep(config, folder, generator.model)
    plan = time_sweep(plan, cells, config, generator, folder)
    timing_s = time.monotonic() - start
    start = time.monotonic()
    dino, clip, faces = load_scorers(config.dino_model, config.clip_model, None,
                                     generator.device)
    scorer_load_s = time.monotonic() - start
    start = time.monotonic()
    result = run_sweep(config, generator, folder, dino, clip, faces)
    sweep_s = time.monotonic() - start
    total = timing_s + scorer_load_s + sweep_s
    return {
        "model": "SD 1.5 architecture, random weights",
        "size": f"{size}x{size}",
        "device": str(generator.device),
        "precision": str(generator.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "sweep": {k: config.to_dict()[k] for k in (
            "candidates", "unet_scales", "text_encoder_scales", "guidances", "prompt_set",
            "images_per_prompt", "steps", "sampler", "leak_images")},
        "cells": plan.cells, "base_cells": plan.base_cells, "images": plan.images,
        "estimate_s": round(plan.seconds, 1),
        "estimate_timing_s": round(timing_s, 1),
        "scorer_load_s": round(scorer_load_s, 1),
        "drawing_s": round(result.seconds_drawing, 1),
        "scoring_s": round(result.seconds_scoring, 1),
        "sweep_s": round(sweep_s, 1),
        "total_s": round(total, 1),
        "seconds_per_image": round(result.seconds_drawing / max(1, result.drawn), 2),
        "scoring_share": round(result.seconds_scoring / sweep_s, 4),
        "estimate_error": round(plan.seconds / sweep_s - 1, 3),
        "drawn": result.drawn, "reused": result.reused,
        "recommendation": result.recommendation.reason if result.recommendation else None,
    }


def format_report(r: dict) -> str:
    lines = [
        (f"Sweep of {r['cells']} cells + {r['base_cells']} base row(s), {r['images']} images, "
         f"{r['size']} on {r['device']} ({r['precision']}, {r['torch_threads']} threads)"),
        (f"  estimate before it started: {r['estimate_s']:.0f} s "
         f"(the timing itself {r['estimate_timing_s']:.0f} s)"),
        (f"  sweep: {r['sweep_s']:.0f} s = drawing {r['drawing_s']:.0f} s + scoring "
         f"{r['scoring_s']:.0f} s ({100 * r['scoring_share']:.1f} %) + the rest"),
        (f"  scorers loaded in {r['scorer_load_s']:.0f} s; {r['seconds_per_image']:.1f} s per "
         f"image; estimate off by {100 * r['estimate_error']:+.0f} %"),
        f"  total with timing and loading: {r['total_s']:.0f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("/tmp/sd15arch"),
                        help="SD 1.5-architecture folder (built there if missing).")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-sweep"),
                        help="Photos, the run, the scorers and the sweeps go here.")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--scorers", type=Path, nargs=2, default=None,
                        metavar=("DINO", "CLIP"),
                        help="Scorer folders to use instead of random full-size ones.")
    parser.add_argument("--steps", type=int, default=None,
                        help="Sampler steps per image; default: the sweep's own default.")
    parser.add_argument("--json", type=Path, default=None, help="Write the figures here.")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    from dreamstudio.errors import DreamStudioError

    try:
        report = run_benchmark(args.model, args.workdir, args.size, args.scorers, args.steps)
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
