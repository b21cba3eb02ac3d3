"""Prior-preservation benchmark: `python -m bench.prior --model DIR [...]`.

One prior-preservation run end to end with prior prediction (no class images), then one
with each `--class-images` count (class images drawn into an empty folder first), same
photos and settings. Prints and writes (JSON) each run's wall time split into class-image
generation and training, and its training steps per second.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from dreamstudio.config import TrainConfig, default_of
from dreamstudio.train.trainer import train
from tests.support.sample_photos import find_datasets

PROMPT, CLASS_PROMPT = "a photo of sks dog", "a photo of dog"


def run_once(model: str, photos: Path, work: Path, steps: int, resolution: int,
             precision: str, num_class: int = 0, class_image_steps: int | None = None) -> dict:
    """One run; `num_class` 0 = prior prediction, else that many class images."""
    stamps: dict[str, float] = {}

    def progress(p):
        now = time.monotonic()
        stamps.setdefault(f"first_{p.phase}", now)
        stamps[f"last_{p.phase}"] = now

    name = f"class-{num_class}" if num_class else "prediction"
    extra = {"prior_mode": "prediction"} if not num_class else {
        "class_dir": work / name / "class", "num_class_images": num_class}
    if class_image_steps:
        extra["class_image_steps"] = class_image_steps
    config = TrainConfig(
        model=str(model), instance_dir=photos, instance_prompt=PROMPT,
        class_prompt=CLASS_PROMPT, output_dir=work / name / "run", steps=steps,
        resolution=resolution, mixed_precision=precision, validation_every=0,
        checkpoint_every=0, export_kohya=False, **extra)
    start = time.monotonic()
    result = train(config, progress)
    total = time.monotonic() - start
    drawing = (stamps["last_class_images"] - stamps["first_class_images"]
               if "first_class_images" in stamps else 0.0)
    training = steps / result.steps_per_second
    return {"method": "prior prediction" if not num_class else "class images",
            "class_images": num_class, "class_image_s": round(drawing, 2),
            "training_s": round(training, 2), "total_s": round(total, 2),
            "steps_per_second": round(result.steps_per_second, 4)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/tmp/sd15arch",
                        help="Base model folder or Hub id (an SD 1.5-architecture folder with "
                             "random weights is built at the default path when missing).")
    parser.add_argument("--photos", type=Path, default=find_datasets() / "dog")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=default_of(TrainConfig, "steps"))
    parser.add_argument("--class-images", type=int, nargs="+", default=[8, 100],
                        help="Class-image counts to compare with (one run each).")
    parser.add_argument("--class-image-steps", type=int, default=None,
                        help="Sampler steps per class image (default: the trainer's).")
    parser.add_argument("--precision", default="auto", help="Mixed precision of the runs.")
    parser.add_argument("--output", type=Path, default=Path("bench-prior.json"))
    args = parser.parse_args(argv)
    default_steps = default_of(TrainConfig, "steps")

    if args.model == parser.get_default("model") and not Path(args.model).is_dir():
        from .sd15 import save_sd15_architecture
        save_sd15_architecture(Path(args.model))
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-prior-") as tmp:
        for n in [0, *args.class_images]:
            runs.append(run_once(args.model, args.photos, Path(tmp), args.steps,
                                 args.resolution, args.precision, n, args.class_image_steps))
            r = runs[-1]
            # What a run of the trainer's default length costs, from this run's own rates.
            r["projected_total_s_at_default_steps"] = round(
                r["class_image_s"] + default_steps / r["steps_per_second"], 1)
            print(f"{r['method']:>16} {r['class_images']:>4} class images: "
                  f"drawing {r['class_image_s']:8.1f} s  training {r['training_s']:8.1f} s  "
                  f"total {r['total_s']:8.1f} s  ({r['steps_per_second']:.3f} steps/s)")
    report = {"model": args.model, "resolution": args.resolution, "steps": args.steps,
              "precision": args.precision,
              "default_steps": default_steps, "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "runs": runs}
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.output}")
    return report


if __name__ == "__main__":
    main()
