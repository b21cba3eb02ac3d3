"""Command line: `python -m dreamstudio prepare|train|generate|evaluate|tune|tiny-model ...`.

The parser only turns arguments into the same typed configs the app uses; every command
ends in one clear line on failure and a non-zero exit. Options that set a config field are
built from that field: its default, type, choices and help come from the dataclass, so
the CLI cannot drift from the app. The tables below only say which fields each command
offers, in which order, and where a flag's name or type differs from the field's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .config import GenerateConfig, PrepareConfig, TrainConfig, check_not_a_file, default_of
from .config.families import family_name, family_of, generate_defaults, train_defaults
from .data.manifest import MANIFEST_NAME
from .errors import DreamStudioError
from .evaluate.config import EvalConfig
from .evaluate.report import CSV_NAME, JSON_NAME
from .generate.grid import AXES
from .generate.grid.axes import parse_values
from .tune.config import TuneConfig


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _values_of(axis: str) -> Callable[[str], list]:
    """A flag type for a list of values in the X/Y grid's syntax ('0.6, 0.8, 1', '0-1 [5]')."""
    def parse(text: str) -> list:
        try:
            return parse_values(axis, text)
        except DreamStudioError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
    parse.__name__ = "values"  # argparse names the type in its messages
    return parse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


@dataclass(frozen=True)
class Flag:
    """How a config field appears on the command line where it differs from the field."""

    field: str
    flag: str | None = None  # default: --the-field-name
    type: Callable[[str], object] | None = None  # default: the field's annotated type
    help: str | None = None  # only for wording the field lacks: that of a "--no-" flag


class _Store(argparse.Action):
    """argparse's plain store, remembering that the option was given: a family's defaults
    (config/families.py) fill only the options the user left out."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


def family_filled(args: argparse.Namespace, defaults: dict) -> argparse.Namespace:
    """`args` with each of a family's `defaults` in place of an option not given."""
    given = getattr(args, "given", frozenset())
    return argparse.Namespace(**{**vars(args), **{k: v for k, v in defaults.items()
                                                  if k not in given and hasattr(args, k)}})


def _value_type(hint) -> type:
    """int for `int`, Path for `Path | None`: the type a flag's text converts to."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _help(text: str | None, default) -> str | None:
    if text is None:
        return None
    text = text.replace("%", "%%")  # argparse %-formats help texts
    if not (default is None or default == "" or isinstance(default, bool)):
        text += " (default: %(default)s)"
    return text


def add_field_options(parser: argparse.ArgumentParser, config_cls: type,
                      specs: Iterable[Flag | str]) -> None:
    """Add one option per field named in `specs` (a field name, or a Flag for overrides).

    The option's dest is the field name, so `config_from(args, config_cls)` builds the
    config. A field without a default is a required option; a bool field is a switch that
    turns its default around (`--flip` sets True, `--no-kohya` sets export_kohya False).
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    for spec in specs:
        spec = Flag(spec) if isinstance(spec, str) else spec
        f = fields[spec.field]
        flag = spec.flag or "--" + f.name.replace("_", "-")
        has_default = not (f.default is dataclasses.MISSING
                           and f.default_factory is dataclasses.MISSING)
        default = default_of(config_cls, f.name) if has_default else None
        text = _help(spec.help or f.metadata.get("help"), default)
        kind = _value_type(hints[f.name])
        if kind is bool:
            if default is True and not flag.startswith("--no-"):
                raise ValueError(f"{config_cls.__name__}.{f.name} defaults to True: its "
                                 "flag turns it off and is named --no-...")
            action = "store_false" if default else "store_true"
            parser.add_argument(flag, dest=f.name, action=action, default=default, help=text)
            continue
        choices = f.metadata.get("choices")
        metavar = None if choices else flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(
            flag, dest=f.name, action=_Store, type=spec.type or (None if kind is str else kind),
            choices=choices, default=default, required=not has_default, metavar=metavar,
            help=text,
        )


def config_from(args: argparse.Namespace, config_cls: type, **extra):
    """`config_cls` built from the parsed options named after its fields (plus `extra`)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return config_cls(**values, **extra)


# The options of each command, in --help order: field names, or Flags where they differ.
PREPARE_OPTIONS = ("mode", "size", "face_margin",
                   Flag("hold_out", "--no-hold-out",
                        help="Keep no photos for scoring only: train on all of them."))
MODEL_OPTIONS = ("model", Flag("model_config_dir", "--model-config"), "vae")  # TrainConfig
TRAIN_OPTIONS = (
    *MODEL_OPTIONS, "instance_dir", "instance_prompt", Flag("output_dir", "--output"),
    "class_dir", "class_prompt", Flag("num_class_images", type=_positive_int),
    "prior_loss_weight", Flag("steps", type=_positive_int), Flag("learning_rate", "--lr"),
    "text_encoder_lr",
    Flag("train_text_encoder", "--no-text-encoder", help="Train the UNet LoRA only."),
    Flag("rank", type=_positive_int), Flag("resolution", type=_positive_int), "seed",
    Flag("batch_size", type=_positive_int), "mixed_precision", "gradient_checkpointing",
    "use_8bit_adam",
    Flag("channels_last", "--no-channels-last",
         help="Keep the UNet in the default memory format."),
    "flip", "lr_scheduler", "lr_warmup_steps", "checkpoint_every",
    Flag("keep_checkpoints", type=_positive_int), "resume", "validation_prompt",
    "validation_every", "score_checkpoints", Flag("score_images", type=_positive_int),
    "score_dino_model", "score_clip_model",
    Flag("export_kohya", "--no-kohya",
         help="Do not also write the A1111/ComfyUI (kohya) file."),
    "use_dora", Flag("lora_alpha", type=_positive_int), "optimizer",
    Flag("use_captions", "--no-captions",
         help="Ignore the photos' captions: every photo trains on the instance prompt."),
    "pivotal", Flag("pivotal_tokens", type=_positive_int), "pivotal_lr", "pivotal_stop",
    "prior_mode", "min_snr_gamma", "noise_offset", "face_loss_weight", "face_outside_weight",
    Flag("subject_name", "--name"), "device",
)
GENERATE_OPTIONS = (
    "negative_prompt", "unet_scale", "text_encoder_scale", "guidance",
    Flag("steps", type=_positive_int), "seed", Flag("num_images", type=_positive_int),
    "height", "width", "sampler", "precision",
)
EVALUATE_OPTIONS = (
    "identifier", "class_noun", "kind", Flag("images_per_prompt", type=_positive_int),
    Flag("num_prompts", type=_positive_int), Flag("steps", type=_positive_int), "guidance",
    "seed", "unet_scale", "text_encoder_scale", "height", "width", "dino_model", "clip_model",
)

TUNE_OPTIONS = (
    Flag("candidates", type=str.split), Flag("unet_scales", type=_values_of("unet_scale")),
    Flag("text_encoder_scales", type=_values_of("text_encoder_scale")),
    Flag("guidances", type=_values_of("guidance")), "prompt_set",
    Flag("images_per_prompt", type=_positive_int), Flag("steps", type=_positive_int), "seed",
    "height", "width", "negative_prompt", "sampler", "precision", "leak_images",
    "clip_t_tolerance", "leak_margin", "face_identity", "face_weights", "dino_model",
    "clip_model", "identifier", "class_noun", "kind", "leak_prompt",
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dreamstudio", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("prepare", help="Crop photos of a subject into training images.")
    p.add_argument("input_dir", type=Path, help="Folder of photos (JPEG, PNG, WebP).")
    p.add_argument("output_dir", type=Path, help=f"Folder for the crops and {MANIFEST_NAME}.")
    add_field_options(p, PrepareConfig, PREPARE_OPTIONS)

    t = sub.add_parser("train", help="Train a DreamBooth LoRA of one subject.")
    add_field_options(t, TrainConfig, TRAIN_OPTIONS)

    g = sub.add_parser("generate", help="Generate images with a trained LoRA.")
    add_field_options(g, TrainConfig, MODEL_OPTIONS)
    add_field_options(g, GenerateConfig, [Flag("lora_dir", "--lora"), "prompt"])
    g.add_argument("--output", type=Path, required=True, help="Folder for the PNGs.")
    add_field_options(g, GenerateConfig, GENERATE_OPTIONS)
    g.add_argument("--grid-x", choices=tuple(AXES), default=None,
                   help="Make one labelled X/Y grid image varying this setting by column.")
    g.add_argument("--grid-x-values", default=None,
                   help="e.g. '0, 0.5, 1', '0-1 (+0.25)', '0-1 [5]' or 'Euler a, DDIM'.")
    g.add_argument("--grid-y", choices=tuple(AXES), default=None,
                   help="The setting varied by row (optional).")
    g.add_argument("--grid-y-values", default=None, help="Values of --grid-y, same syntax.")
    add_field_options(g, TrainConfig, ["device"])

    e = sub.add_parser(
        "evaluate",
        help="Score a LoRA with the DreamBooth paper's DINO, CLIP-I and CLIP-T metrics.",
    )
    e.add_argument("--model", default=None,
                   help="Base model (Hub id, diffusers folder or file); default: the one the "
                        "LoRA was trained on.")
    add_field_options(e, TrainConfig, MODEL_OPTIONS[1:])
    add_field_options(e, EvalConfig, [Flag("lora_dir", "--lora"),
                                      Flag("real_images_dir", "--real-dir")])
    e.add_argument("--output", type=Path, required=True,
                   help=f"Folder for the images, {JSON_NAME} and {CSV_NAME}.")
    add_field_options(e, EvalConfig, EVALUATE_OPTIONS)
    add_field_options(e, TrainConfig, ["device"])

    u = sub.add_parser(
        "tune",
        help="Find the best LoRA and sliders of a run: a scored sweep with a recommendation.",
    )
    u.add_argument("--model", default=None,
                   help="Base model (Hub id, diffusers folder or file); default: the one the "
                        "run was trained on.")
    add_field_options(u, TrainConfig, MODEL_OPTIONS[1:])
    add_field_options(u, TuneConfig, [Flag("run_dir", "--run"),
                                      Flag("real_images_dir", "--photos")])
    u.add_argument("--output", type=Path, default=None,
                   help="Folder for the images and tune.json/.csv/.png; default: tune/ in the "
                        "run folder.")
    add_field_options(u, TuneConfig, TUNE_OPTIONS)
    u.add_argument("--estimate", action="store_true",
                   help="Only say how many images the sweep draws and about how long it takes.")
    add_field_options(u, TrainConfig, ["device"])

    m = sub.add_parser("tiny-model", help="Write a tiny random SD model (for tests/demos).")
    m.add_argument("output_dir", type=Path)
    return parser


def prepare_command(args) -> int:
    from .data.prepare import list_image_files, prepare_photos

    if not args.input_dir.is_dir():
        raise DreamStudioError(f"Input folder {args.input_dir} does not exist.")
    check_not_a_file(args.output_dir, "Output folder", "output_dir")
    config = config_from(args, PrepareConfig)
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
    print(f"{len(report.kept)} kept, {len(report.rejected)} rejected, "
          f"{len(report.scoring)} held out for scoring only; manifest: {args.output_dir / MANIFEST_NAME}")
    return 0 if report.kept else 1


def train_config(args) -> tuple[str, TrainConfig]:
    """The base model's family and the run's config: the options given, the family's
    defaults (config/families.py) for those left out, TrainConfig's for the rest."""
    family = family_of(args.model, args.model_config_dir)
    return family, config_from(family_filled(args, train_defaults(family)), TrainConfig)


def generate_config(args) -> GenerateConfig:
    """What to draw: the options given, the base model family's defaults for the rest."""
    family = family_of(args.model, args.model_config_dir)
    return config_from(family_filled(args, generate_defaults(family)), GenerateConfig)


def train_command(args) -> int:
    import torch

    from .train.trainer import TrainProgress, train

    family, config = train_config(args)
    every = max(1, config.steps // 20)
    print(f"Base model: {config.model} ({family_name(family)}), {config.resolution} px, "
          f"UNet LR {config.learning_rate:g}, text-encoder LR {config.text_encoder_lr:g}, "
          f"{config.steps} steps", flush=True)

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


def generate_command(args) -> int:
    from .generate.generator import Generator

    config = generate_config(args)
    check_not_a_file(args.output, "Output folder", "--output")
    generator = Generator(args.model, device=args.device,
                          model_config_dir=args.model_config_dir, vae=args.vae)
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


def evaluate_command(args) -> int:
    """Generate, score, print the table; 0 on success."""
    from .core.models import DEFAULT_MODEL
    from .evaluate.evaluate import EvalProgress, evaluate, format_table
    from .generate.generator import Generator
    from .lora.files import read_lora_info

    config = config_from(args, EvalConfig)
    check_not_a_file(args.output, "Output folder", "--output")
    model, model_config, vae = args.model, args.model_config_dir, args.vae
    if model is None:
        trained = read_lora_info(config.lora_dir).get("config") or {}
        model = trained.get("model") or DEFAULT_MODEL
        model_config = model_config or trained.get("model_config_dir")
        vae = vae or trained.get("vae")
    print(f"Evaluating {config.lora_dir} on {model}: identifier '{config.identifier}', "
          f"class '{config.class_noun}', {config.kind} prompts", flush=True)
    generator = Generator(model, device=args.device, model_config_dir=model_config, vae=vae)

    shown = []

    def show(p: EvalProgress) -> None:
        # One line per prompt, not per sampler step.
        if not shown or shown[-1] != (p.phase, p.message):
            shown.append((p.phase, p.message))
            print(f"[{p.phase}] {p.message}", flush=True)

    cancel = threading.Event()
    try:
        report = evaluate(config, generator, args.output, progress=show, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        print("cancelled", file=sys.stderr)
        return 130
    for path, reason in report.skipped_real_images:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(format_table(report))
    return 0


def tune_command(args) -> int:
    """Plan, time, sweep, print the table and the recommendation; 0 on success."""
    from .core.models import DEFAULT_MODEL
    from .generate.generator import Generator
    from .tune.report import format_table
    from .tune.scoring import load_scorers
    from .tune.sweep import plan_sweep, run_sweep, time_sweep
    from .workspace.runs import load_run_settings

    config = config_from(args, TuneConfig)
    output = args.output or config.run_dir / "tune"
    check_not_a_file(output, "Output folder", "--output")
    trained = load_run_settings(config.run_dir)
    model = args.model or trained.get("model") or DEFAULT_MODEL
    generator = Generator(model, device=args.device,
                          model_config_dir=args.model_config_dir or trained.get(
                              "model_config_dir"), vae=args.vae or trained.get("vae"))
    print(f"Sweeping run {config.run_dir} on {model}: identifier '{config.identifier}', "
          f"class '{config.class_noun}'", flush=True)
    plan, cells = plan_sweep(config, output, model)
    print(time_sweep(plan, cells, config, generator, output).describe(), flush=True)
    if args.estimate:
        return 0
    shown = []

    def show(p) -> None:
        per_step = p.phase == "drawing" and "(step" in p.message  # one line per draw
        if not per_step and (not shown or shown[-1] != p.message):
            shown.append(p.message)
            print(f"[{p.phase} {p.done}/{p.total}] {p.message}", flush=True)

    cancel = threading.Event()
    try:
        dino, clip, faces = load_scorers(
            config.dino_model, config.clip_model,
            config.face_weights if config.scores_faces else None, generator.device)
        result = run_sweep(config, generator, output, dino, clip, faces, show, cancel)
    except KeyboardInterrupt:
        cancel.set()
        print("stopped; the images drawn so far are reused by the next sweep", file=sys.stderr)
        return 130
    print(format_table(result))
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    return 0


def tiny_model_command(args) -> int:
    from .core.tiny_model import save_tiny_model

    print(save_tiny_model(args.output_dir))
    return 0


COMMANDS = {"prepare": prepare_command, "train": train_command, "generate": generate_command,
            "evaluate": evaluate_command, "tune": tune_command,
            "tiny-model": tiny_model_command}


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system refusal the checks up front could not foresee (a folder
    made unreadable, a disk that is full): which path, what is wrong, what to do."""
    path = exc.filename
    if path is None:  # not about one path (a network or device error): its own words
        return " ".join(str(exc).split())
    if isinstance(exc, PermissionError):
        return (f"permission denied for {path}: choose a folder you can read and write, or "
                "change its permissions.")
    if isinstance(exc, FileExistsError):
        return f"{path} already exists and is not a folder: give a folder path instead."
    if isinstance(exc, NotADirectoryError):
        return f"a part of {path} is a file, not a folder: give a folder path instead."
    return f"{exc.strerror or exc}: {path}."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DreamStudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
