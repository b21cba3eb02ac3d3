"""What each training method costs per step: `python -m bench.methods --json FILE`.

Trains a few steps of SD 1.5's architecture (random weights, built once offline) at 256 px
with each training method on, one at a time, on a face photo prepared in face mode (so the
face-weighted loss has a face box), and prints and writes each one's seconds per step next
to the plain LoRA's. The plain run goes first and last, so a machine that speeds up or slows
down during the benchmark shows as two different plain figures. Nothing else should run
beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

# (name, TrainConfig settings on top of the plain run, what it is)
VARIANTS: tuple[tuple[str, dict, str], ...] = (
    ("plain", {}, "the notebook's LoRA (UNet + text encoder)"),
    ("dora", {"use_dora": True}, "DoRA"),
    ("min_snr", {"min_snr_gamma": 5.0}, "min-SNR-gamma 5"),
    ("noise_offset", {"noise_offset": 0.05}, "offset noise 0.05"),
    ("face_weighted", {"face_outside_weight": 0.3}, "face-weighted loss (0.3 outside)"),
    ("prior_prediction", {"class_prompt": "a photo of a person", "prior_mode": "prediction"},
     "prior prediction (no class images)"),
    ("pivotal", {"pivotal": True}, "pivotal tuning, text encoder LoRA on"),
    ("no_text_encoder", {"train_text_encoder": False}, "UNet LoRA only"),
    ("pivotal_no_text_encoder", {"pivotal": True, "train_text_encoder": False},
     "pivotal tuning, UNet LoRA only"),
    ("prodigy", {"optimizer": "prodigy", "learning_rate": 1.0, "text_encoder_lr": 1.0},
     "Prodigy optimizer"),
)


def face_photos(folder: Path, size: int) -> Path:
    """skimage's astronaut, prepared in face mode (a crop with a face box)."""
    from PIL import Image
    from skimage import data

    from dreamstudio.config import PrepareConfig
    from dreamstudio.data.prepare import prepare_photos

    photos = folder / "photos"
    if not photos.is_dir():
        source = folder / "astronaut.png"
        Image.fromarray(data.astronaut()).save(source)
        prepare_photos([source], photos, PrepareConfig(mode="face", size=size))
    return photos


def run_variant(model: Path, photos: Path, work: Path, name: str, settings: dict,
                steps: int, size: int) -> dict:
    from dreamstudio.config import TrainConfig
    from dreamstudio.train.trainer import train

    if settings.get("optimizer") == "prodigy":
        try:
            import prodigyopt  # noqa: F401
        except ImportError:
            return {"skipped": "prodigyopt is not installed (pip install prodigyopt)"}
    config = TrainConfig(model=str(model), instance_dir=photos,
                         instance_prompt="a photo of sks person",
                         output_dir=work / f"{name}-{time.monotonic_ns()}", steps=steps,
                         resolution=size, validation_every=0, checkpoint_every=0,
                         export_kohya=False, **settings)
    start = time.monotonic()
    result = train(config)
    return {"s_per_step": round(1 / result.steps_per_second, 3),
            "wall_s": round(time.monotonic() - start, 1)}


def run_benchmark(model: Path, steps: int, size: int, only: list[str] | None = None,
                  repeats: int = 1) -> dict:
    from .sd15 import save_sd15_architecture

    if not (model / "model_index.json").is_file():
        save_sd15_architecture(model)
    work = Path(tempfile.mkdtemp(prefix="bench-methods-"))
    photos = face_photos(work, size)
    chosen = [v for v in VARIANTS if only is None or v[0] in only or v[0] == "plain"]
    # Rounds alternate forward and backward, so drift over the benchmark falls on every
    # method alike; a single round runs plain again at its end for the same reason.
    rounds = [chosen if r % 2 == 0 else chosen[::-1] for r in range(repeats)]
    if repeats == 1:
        rounds[0] = [*chosen, VARIANTS[0]]
    figures: dict[str, dict] = {}
    for order in rounds:
        for name, settings, about in order:
            print(f"{name}: {about}", flush=True)
            figure = run_variant(model, photos, work, name, settings, steps, size)
            entry = figures.setdefault(name, {"what": about})
            if "skipped" in figure:
                entry["skipped"] = figure["skipped"]
                continue
            entry.setdefault("s_per_step_runs", []).append(figure["s_per_step"])
            entry.setdefault("wall_s_runs", []).append(figure["wall_s"])
    for entry in figures.values():
        if "s_per_step_runs" in entry:
            entry["s_per_step"] = round(statistics.median(entry["s_per_step_runs"]), 3)
    plain = figures["plain"]["s_per_step"]
    for entry in figures.values():
        if "s_per_step" in entry:
            entry["vs_plain"] = round(entry["s_per_step"] / plain, 3)
    return {"model": "SD 1.5 architecture, random weights", "resolution": size,
            "steps_per_run": steps, "rounds": repeats, "statistic": "median over runs",
            "precision": "auto (bf16 where the CPU has it)",
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "torch": torch.__version__, "methods": figures}


def format_report(r: dict) -> str:
    lines = [f"Per-step cost at {r['resolution']} px ({r['steps_per_run']} steps a run):"]
    for name, f in r["methods"].items():
        if "skipped" in f:
            lines.append(f"  {name:24s} skipped: {f['skipped']}")
        else:
            lines.append(f"  {name:24s} {f['s_per_step']:6.2f} s/step  x{f['vs_plain']:.2f}"
                         f"  ({f['what']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.methods",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("/tmp/sd15arch"),
                        help="SD 1.5-architecture folder (built there if missing).")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--only", nargs="+", default=None, metavar="METHOD",
                        help=f"Some of: {', '.join(v[0] for v in VARIANTS)} (plain always).")
    parser.add_argument("--repeats", type=int, default=1,
                        help="Rounds over all methods, alternating order; medians reported.")
    parser.add_argument("--json", type=Path, default=None, help="Write the figures here.")
    args = parser.parse_args(argv)
    report = run_benchmark(args.model, args.steps, args.resolution, args.only, args.repeats)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
