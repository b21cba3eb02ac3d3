"""GPU check: `python -m bench.gpu_check [--device cuda] [--json PATH]`.

One process, nothing downloaded: builds SD 1.5's architecture with random weights (or
takes --model), trains 300 steps at 512 px, batch 1, rank 4 through DreamStudio's own
trainer in the device's mixed precision (bf16, fp16 where the GPU has no bf16) - once plain,
once with gradient checkpointing and 8-bit AdamW (checkpointing alone where bitsandbytes is
missing) - then generates 4 images at 512 px, 25 steps, with the LoRA of the plain run. It prints a table and writes JSON: s/step
(median after the warm-up steps), loop and total seconds, peak VRAM per phase, images/s,
the GPU and library versions, and pass/fail against the targets (300 steps in under 20 s and
under 8 GiB with checkpointing + 8-bit AdamW). `--device cpu --steps 2` is a dry run.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Nothing may wait on the Hub: the model is built or given, never downloaded.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np
import torch
from PIL import Image

from dreamstudio.config import GenerateConfig, TrainConfig
from dreamstudio.core.devices import auto_mixed_precision, pick_device, release_memory
from dreamstudio.core.files import atomic_write_json
from dreamstudio.errors import DreamStudioError, InputError
from tests.support.sample_photos import find_datasets

from .gpu_report import (
    GIB,
    TARGET_RESOLUTION,
    TARGET_STEPS,
    environment,
    print_table,
    round_figure,
    verdict,
)

PROMPT = "a photo of sks dog"
# The first steps pay for kernel selection and memory-pool growth; they are not the speed.
WARMUP_STEPS = 5
DEFAULT_JSON = Path(__file__).resolve().parent / "gpu-check.json"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bench.gpu_check", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu "
                        "for a dry run.")
    parser.add_argument("--steps", type=_positive_int, default=TARGET_STEPS,
                        help="Training steps per run.")
    parser.add_argument("--image-steps", type=_positive_int, default=25,
                        help="Sampler steps per image.")
    parser.add_argument("--images", type=_positive_int, default=4, help="Images generated.")
    parser.add_argument("--resolution", type=_positive_int, default=TARGET_RESOLUTION,
                        help="Training and image side in pixels.")
    parser.add_argument("--model", type=Path, help="An existing diffusers folder instead of "
                        "building SD 1.5's architecture (e.g. the tiny test model).")
    parser.add_argument("--photos", type=Path, help="Folder of training photos (default: the "
                        "DreamBooth dog photos if present, else synthetic ones).")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="Where the figures go.")
    return parser


def check_options(args: argparse.Namespace) -> tuple[torch.device, TrainConfig, GenerateConfig]:
    """The device and the two configs the runs start from; InputError names what is wrong.
    The configs check their own fields, so this script cannot accept what the app refuses."""
    if args.model is not None and not (args.model / "model_index.json").is_file():
        raise InputError(
            f"--model {args.model}: no diffusers model there (no model_index.json); give a "
            "diffusers folder, or leave --model out to build SD 1.5's architecture.")
    if args.photos is not None and not args.photos.is_dir():
        raise InputError(f"--photos {args.photos}: not a folder; give a folder of "
                         "photos, or leave --photos out.")
    if args.json.is_dir():
        raise InputError(f"--json {args.json} is a folder; give a file path.")
    if args.device.strip().lower().startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: PyTorch {torch.__version__} finds no CUDA "
                         "GPU here; run the check on a CUDA machine, or pass --device cpu "
                         "for a dry run.")
    device = pick_device(args.device)
    base = TrainConfig(instance_dir=Path("photos"), instance_prompt=PROMPT,
                       output_dir=Path("lora"), model=str(args.model or "sd15"),
                       steps=args.steps, resolution=args.resolution, rank=4, batch_size=1,
                       mixed_precision=auto_mixed_precision(device), device=str(device),
                       validation_every=0, checkpoint_every=0, export_kohya=False)
    generate = GenerateConfig(prompt=PROMPT, steps=args.image_steps, num_images=args.images,
                              height=args.resolution, width=args.resolution)
    return device, base, generate


def steady_s_per_step(step_ends: list[float]) -> tuple[float | None, int]:
    """Median seconds per step from the times each step ended, and how many of the first
    steps that leaves out (the first has no start time; then up to WARMUP_STEPS more, but
    never more than half of what there is)."""
    gaps = [b - a for a, b in itertools.pairwise(step_ends)]
    if not gaps:
        return None, len(step_ends)
    warmup = min(WARMUP_STEPS, len(gaps) // 2)
    return statistics.median(gaps[warmup:]), warmup + 1


def eight_bit_adam_status(device: torch.device) -> str:
    if device.type != "cuda":
        return "skipped: 8-bit AdamW needs CUDA"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "skipped: bitsandbytes not installed"
    return "used"


def synthetic_photos(folder: Path, count: int = 5, side: int = 512, seed: int = 0) -> Path:
    """Smooth random colour fields: pixels a VAE encodes like photos, with no download."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        coarse.resize((side, side), Image.Resampling.BICUBIC).save(folder / f"{i:02d}.png")
    return folder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    release_memory()  # so the reserved peak starts from what this phase needs, not the last
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"peak_vram_allocated_gib": None, "peak_vram_reserved_gib": None}
    _sync(device)
    return {"peak_vram_allocated_gib": round(torch.cuda.max_memory_allocated(device) / GIB, 2),
            "peak_vram_reserved_gib": round(torch.cuda.max_memory_reserved(device) / GIB, 2)}


def train_phase(config: TrainConfig, device: torch.device) -> dict:
    from dreamstudio.train.trainer import train

    step_ends: list[float] = []

    def progress(report) -> None:
        # The step's loss.item() has synchronised the device by the time this is called.
        if report.phase == "training":
            step_ends.append(time.perf_counter())

    _reset_peak(device)
    start = time.perf_counter()
    result = train(config, progress)
    total = time.perf_counter() - start
    per_step, excluded = steady_s_per_step(step_ends)
    loop = result.steps_done / result.steps_per_second
    return {"gradient_checkpointing": config.gradient_checkpointing,
            "use_8bit_adam": config.use_8bit_adam, "steps": result.steps_done,
            "s_per_step": round_figure(per_step), "first_steps_excluded": excluded,
            "loop_s": round(loop, 2), "total_s": round(total, 2),
            "final_loss": result.final_loss, **_peak(device)}


def generate_phase(base: GenerateConfig, model: str, lora_dir: Path | None,
                   device: torch.device) -> dict:
    from dreamstudio.generate.generator import Generator

    config = dataclasses.replace(base, lora_dir=lora_dir)
    _reset_peak(device)
    generator = Generator(model, device=str(device))
    start = time.perf_counter()
    generator.load_for(config)
    load = time.perf_counter() - start
    # One short image first, so the timed batch does not pay for kernel choice and pools.
    generator.generate(dataclasses.replace(config, num_images=1, steps=min(2, config.steps)))
    _sync(device)
    start = time.perf_counter()
    images = generator.generate(config)
    _sync(device)
    seconds = time.perf_counter() - start
    figures = {"images": len(images), "image_steps": config.steps,
               "size": list(images[0].image.size), "dtype": str(generator.dtype)[6:],
               "sampler": generator.sampler_name, "with_lora": lora_dir is not None,
               "load_s": round(load, 2), "seconds": round(seconds, 2),
               "images_per_s": round(len(images) / seconds, 3), **_peak(device)}
    generator.unload()
    return figures


def _photos(args: argparse.Namespace, work: Path) -> Path:
    if args.photos is not None:
        return args.photos
    dog = find_datasets() / "dog"
    if any(dog.glob("*.jpg")):
        return dog
    return synthetic_photos(work / "photos", side=args.resolution)


def _phase(results: dict, name: str, run, json_path: Path) -> bool:
    """Run one phase into results[name]; a failure (say, out of memory on a small card) is
    recorded in one line and the next phase still runs. The JSON is rewritten after each
    phase, so a run cut short keeps what it measured."""
    try:
        results[name] = {**results.get(name, {}), **run()}
        ok = True
    except Exception as exc:  # noqa: BLE001 - reported, and the other phases still run
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        results[name] = {**results.get(name, {}), "error": f"{type(exc).__name__}: {message}"}
        print(f"{name} failed: {results[name]['error']}", file=sys.stderr, flush=True)
        ok = False
    atomic_write_json(json_path, results, sort_keys=False)
    return ok


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        device, base_train, base_generate = check_options(args)
    except DreamStudioError as exc:
        print(f"python -m bench.gpu_check: error: {exc}", file=sys.stderr)
        return 2
    results: dict = {"environment": environment(device), "precision": base_train.mixed_precision,
                     "settings": {"steps": args.steps, "resolution": args.resolution,
                                  "batch_size": 1, "rank": 4, "images": args.images,
                                  "image_steps": args.image_steps,
                                  "train_text_encoder": base_train.train_text_encoder}}
    work = Path(tempfile.mkdtemp(prefix="dreamstudio-gpu-check-"))
    start = time.perf_counter()
    ok = True
    try:
        model = args.model
        if model is None:
            model = work / "sd15"
            ok = _phase(results, "build_sd15", lambda: _timed_build(model), args.json)
        results["model"] = str(args.model or "SD 1.5 architecture, random weights")
        if ok:
            base = dataclasses.replace(base_train, model=str(model),
                                       instance_dir=_photos(args, work),
                                       output_dir=work / "runs" / "lora")
            results["photos"] = str(base.instance_dir)
            ok = _train_and_generate(results, base, base_generate, device, args.json)
        results["verdict"] = verdict(results, device, args.steps, args.resolution)
        results["wall_s"] = round(time.perf_counter() - start, 1)
        atomic_write_json(args.json, results, sort_keys=False)
        print_table(results)
        print(f"whole check {results['wall_s']} s; written {args.json}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def _train_and_generate(results: dict, base: TrainConfig, generate: GenerateConfig,
                        device: torch.device, json_path: Path) -> bool:
    eight_bit = eight_bit_adam_status(device)
    runs = (("train_plain", {}),
            ("train_low_memory", {"gradient_checkpointing": True,
                                  "use_8bit_adam": eight_bit == "used"}))
    ok = True
    for name, options in runs:
        results[name] = {"eight_bit_adam": eight_bit} if options else {}
        config = dataclasses.replace(base, output_dir=base.output_dir.parent / name, **options)
        ok = _phase(results, name, lambda c=config: train_phase(c, device), json_path) and ok
    # Images as the app draws them, with a trained LoRA: the plain run's if it finished.
    trained = [base.output_dir.parent / name for name, _ in runs
               if "loop_s" in results[name]]
    lora = trained[0] if trained else None
    return _phase(results, "generate", lambda: generate_phase(
        generate, base.model, lora, device), json_path) and ok


def _timed_build(folder: Path) -> dict:
    from bench.sd15 import save_sd15_architecture

    start = time.perf_counter()
    save_sd15_architecture(folder)
    release_memory()
    return {"seconds": round(time.perf_counter() - start, 1)}


if __name__ == "__main__":
    sys.exit(main())
