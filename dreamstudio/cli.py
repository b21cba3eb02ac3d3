"""Command line: `python -m dreamstudio prepare|train|generate|tiny-model ...`.

The parser only turns arguments into the same typed configs the app uses; every command
ends in one clear line on failure and a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import GenerateConfig, TrainConfig
from .core.models import DEFAULT_MODEL
from .errors import DreamStudioError
from .evaluate import evaluate
from .generate.grid import AXES
from .generate.samplers import DEFAULT_SAMPLER, SAMPLER_NAMES


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dreamstudio", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("prepare", help="Crop photos of a subject into training images.")
    p.add_argument("input_dir", type=Path, help="Folder of photos (JPEG, PNG, WebP).")
    p.add_argument("output_dir", type=Path, help="Folder for the crops and manifest.json.")
    p.add_argument("--mode", choices=("face", "object"), default="face",
                   help="face: centre on the most prominent face; object: centre crop.")
    p.add_argument("--size", type=int, default=512, help="Side of the square crops (px).")
    p.add_argument("--face-margin", type=float, default=2.2,
                   help="Crop side as a multiple of the face box (head and shoulders).")

    t = sub.add_parser("train", help="Train a DreamBooth LoRA of one subject.")
    t.add_argument("--model", default=DEFAULT_MODEL, help="Hub id, diffusers folder or file.")
    t.add_argument("--model-config", default=None,
                   help="Diffusers config folder for a single-file checkpoint (offline use).")
    t.add_argument("--instance-dir", type=Path, required=True, help="The subject's photos.")
    t.add_argument("--instance-prompt", required=True, help="e.g. 'a photo of sks dog'.")
    t.add_argument("--output", type=Path, required=True, help="Folder for the LoRA.")
    t.add_argument("--class-dir", type=Path, help="Class images (missing ones generated).")
    t.add_argument("--class-prompt", help="e.g. 'a photo of dog'; enables prior preservation.")
    t.add_argument("--num-class-images", type=_positive_int, default=100)
    t.add_argument("--prior-loss-weight", type=float, default=1.0)
    t.add_argument("--steps", type=_positive_int, default=300)
    t.add_argument("--lr", type=float, default=5e-4, help="UNet LoRA learning rate.")
    t.add_argument("--text-encoder-lr", type=float, default=1e-4)
    t.add_argument("--no-text-encoder", action="store_true",
                   help="Train the UNet LoRA only.")
    t.add_argument("--rank", type=_positive_int, default=4)
    t.add_argument("--resolution", type=_positive_int, default=512)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=_positive_int, default=1)
    t.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"), default="auto",
                   help="auto: bf16 where the hardware has it, fp16 on older GPUs.")
    t.add_argument("--gradient-checkpointing", action="store_true",
                   help="Less memory, about 30%% slower.")
    t.add_argument("--use-8bit-adam", action="store_true",
                   help="8-bit AdamW (needs bitsandbytes, CUDA).")
    t.add_argument("--no-channels-last", action="store_true",
                   help="Keep the UNet in the default memory format.")
    t.add_argument("--flip", action="store_true", help="Random horizontal flips.")
    t.add_argument("--lr-scheduler", default="constant",
                   choices=("constant", "constant_with_warmup", "linear", "cosine"))
    t.add_argument("--lr-warmup-steps", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=100,
                   help="Resumable checkpoint every N steps (0 = off).")
    t.add_argument("--keep-checkpoints", type=_positive_int, default=2)
    t.add_argument("--resume", action="store_true",
                   help="Continue from the latest checkpoint in --output.")
    t.add_argument("--validation-prompt", default=None,
                   help="Prompt of validation images (default: the instance prompt).")
    t.add_argument("--validation-every", type=int, default=100,
                   help="Validation image every N steps (0 = off).")
    t.add_argument("--no-kohya", action="store_true",
                   help="Do not also write the A1111/ComfyUI (kohya) file.")
    t.add_argument("--name", default=None,
                   help="Subject name for the kohya file (default: the output folder name).")
    t.add_argument("--device", default=None, help="cpu, cuda or mps (default: best found).")

    g = sub.add_parser("generate", help="Generate images with a trained LoRA.")
    g.add_argument("--model", default=DEFAULT_MODEL, help="Hub id, diffusers folder or file.")
    g.add_argument("--model-config", default=None)
    g.add_argument("--lora", type=Path, default=None, help="Folder of a trained LoRA.")
    g.add_argument("--prompt", required=True)
    g.add_argument("--output", type=Path, required=True, help="Folder for the PNGs.")
    g.add_argument("--negative-prompt", default="")
    g.add_argument("--unet-scale", type=float, default=1.0)
    g.add_argument("--text-encoder-scale", type=float, default=1.0)
    g.add_argument("--guidance", type=float, default=7.5)
    g.add_argument("--steps", type=_positive_int, default=30)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--num-images", type=_positive_int, default=1)
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=SAMPLER_NAMES,
                   help="Sampler by its A1111 name; Default: the model's own.")
    g.add_argument("--grid-x", choices=tuple(AXES), default=None,
                   help="Make one labelled X/Y grid image varying this setting by column.")
    g.add_argument("--grid-x-values", default=None,
                   help="e.g. '0, 0.5, 1', '0-1 (+0.25)', '0-1 [5]' or 'Euler a, DDIM'.")
    g.add_argument("--grid-y", choices=tuple(AXES), default=None,
                   help="The setting varied by row (optional).")
    g.add_argument("--grid-y-values", default=None, help="Values of --grid-y, same syntax.")
    g.add_argument("--device", default=None)

    evaluate.add_parser(sub)

    m = sub.add_parser("tiny-model", help="Write a tiny random SD model (for tests/demos).")
    m.add_argument("output_dir", type=Path)
    return parser


def _prepare(args) -> int:
    from .config import PrepareConfig
    from .data.prepare import list_image_files, prepare_photos

    if not args.input_dir.is_dir():
        raise DreamStudioError(f"Input folder {args.input_dir} does not exist.")
    config = PrepareConfig(mode=args.mode, size=args.size, face_margin=args.face_margin)
    sources = list_image_files(args.input_dir)
    if not sources:
        raise DreamStudioError(f"Input folder {args.input_dir} has no files.")
    report = prepare_photos(sources, args.output_dir, config)
    for r in report.results:
        status = f"kept -> {r.output} box={r.crop_box}" if r.kept else f"rejected: {r.reason}"
        notes = "".join(f"\n    warning: {w}" for w in r.warnings)
        print(f"{r.source}: {status}{notes}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    print(f"{len(report.kept)} kept, {len(report.rejected)} rejected; "
          f"manifest: {args.output_dir / 'manifest.json'}")
    return 0 if report.kept else 1


def _train(args) -> int:
    import torch

    from .train.trainer import TrainProgress, train

    config = TrainConfig(
        model=args.model, model_config_dir=args.model_config, instance_dir=args.instance_dir,
        instance_prompt=args.instance_prompt, output_dir=args.output, class_dir=args.class_dir,
        class_prompt=args.class_prompt, num_class_images=args.num_class_images,
        prior_loss_weight=args.prior_loss_weight, steps=args.steps, learning_rate=args.lr,
        text_encoder_lr=args.text_encoder_lr, train_text_encoder=not args.no_text_encoder,
        rank=args.rank, resolution=args.resolution, seed=args.seed,
        batch_size=args.batch_size, mixed_precision=args.mixed_precision, device=args.device,
        gradient_checkpointing=args.gradient_checkpointing, use_8bit_adam=args.use_8bit_adam,
        channels_last=not args.no_channels_last, flip=args.flip,
        lr_scheduler=args.lr_scheduler, lr_warmup_steps=args.lr_warmup_steps,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        resume=args.resume, validation_prompt=args.validation_prompt,
        validation_every=args.validation_every, export_kohya=not args.no_kohya,
        subject_name=args.name,
    )
    every = max(1, config.steps // 20)

    def report(p: TrainProgress):
        if p.phase == "training" and (p.step % every and p.step != p.total_steps):
            return
        loss = f" loss {p.loss:.4f}" if p.loss is not None else ""
        eta = f" ~{p.eta_seconds:.0f}s left" if p.eta_seconds else ""
        print(f"[{p.phase}] {p.message}{loss}{eta}", flush=True)

    try:
        result = train(config, progress=report)
    except KeyboardInterrupt:
        print("interrupted; resume with --resume if a checkpoint was written", file=sys.stderr)
        return 130
    except torch.cuda.OutOfMemoryError as exc:
        from .train.jobs import OOM_ADVICE

        raise DreamStudioError(OOM_ADVICE) from exc
    for path, reason in result.skipped_files:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(result.message)
    if result.kohya_path:
        print(f"A1111 / Forge / ComfyUI file: {result.kohya_path}")
    return 0 if result.status == "completed" else 1


def _generate(args) -> int:
    from .generate.generator import Generator

    config = GenerateConfig(
        prompt=args.prompt, lora_dir=args.lora, negative_prompt=args.negative_prompt,
        unet_scale=args.unet_scale, text_encoder_scale=args.text_encoder_scale,
        guidance=args.guidance, steps=args.steps, seed=args.seed, num_images=args.num_images,
        height=args.height, width=args.width, sampler=args.sampler,
    )
    generator = Generator(args.model, device=args.device, model_config_dir=args.model_config)
    if args.grid_x or args.grid_y:
        from .generate.grid import GridAxis, GridConfig, run_grid

        if not args.grid_x:
            raise DreamStudioError("--grid-y needs --grid-x (the columns) as well.")
        y = GridAxis.parse(args.grid_y, args.grid_y_values) if args.grid_y else None
        grid = GridConfig(config, GridAxis.parse(args.grid_x, args.grid_x_values), y)
        print(run_grid(generator, grid, args.output).path)
        return 0
    for item in generator.generate(config, args.output):
        print(item.path)
    return 0


def _tiny_model(args) -> int:
    from .core.tiny_model import save_tiny_model

    print(save_tiny_model(args.output_dir))
    return 0


COMMANDS = {"prepare": _prepare, "train": _train, "generate": _generate,
            "evaluate": evaluate.run, "tiny-model": _tiny_model}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DreamStudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
