"""Scoring a LoRA the way the DreamBooth paper does: DINO, CLIP-I and CLIP-T.

For each evaluation prompt, generate images with the LoRA, then compare them with the
subject's real photos (DINO, CLIP-I: subject fidelity) and with the prompt without the
identifier (CLIP-T: prompt fidelity). Results go to fidelity.json and fidelity.csv beside
the images, with the paper's Table 1 rows for comparison.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..config import GenerateConfig, as_path, check
from ..core.files import atomic_write_json, atomic_write_text
from ..data.images import ImageRejected, open_rgb
from ..errors import InputError
from ..lora.files import CONFIG_NAME, WEIGHTS_NAME, is_lora_dir, read_lora_info
from ..train.latents import image_files
from .metrics import (
    PAPER_REFERENCE,
    ReferenceRow,
    prompt_fidelity,
    self_similarity,
    subject_fidelity,
)
from .prompts import (
    KINDS,
    fill,
    infer_kind,
    split_instance_prompt,
    templates_for,
    without_identifier,
)
from .scorers import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL, ClipScorer, DinoScorer

if TYPE_CHECKING:
    from ..generate.generator import Generator

JSON_NAME = "fidelity.json"
CSV_NAME = "fidelity.csv"
IMAGES_DIR = "images"
METRICS = ("dino", "clip_i", "clip_t")
# Real photos are embedded a few at a time: a folder of 12 MP photos would not fit at once.
_REAL_CHUNK = 8


@dataclass
class EvalConfig:
    lora_dir: Path
    real_images_dir: Path
    identifier: str | None = None  # None: from the LoRA's training prompt
    class_noun: str | None = None  # None: from the LoRA's training prompt
    kind: str | None = None  # "object" or "live"; None: live for cats, dogs and people
    images_per_prompt: int = 4  # the paper: 4 images x 25 prompts per subject
    prompts: list[str] | None = None  # templates ({0} identifier, {1} class) or plain text
    num_prompts: int | None = None  # only the first N prompts, for quick runs
    steps: int = 50
    guidance: float = 7.5
    seed: int = 0
    unet_scale: float = 1.0
    text_encoder_scale: float = 1.0
    height: int | None = None
    width: int | None = None
    negative_prompt: str = ""
    dino_model: str = DEFAULT_DINO_MODEL
    clip_model: str = DEFAULT_CLIP_MODEL

    def __post_init__(self):
        self.lora_dir = as_path(self.lora_dir)
        self.real_images_dir = as_path(self.real_images_dir)
        check(self.lora_dir is not None, "A LoRA folder to evaluate is needed.")
        check(is_lora_dir(self.lora_dir),
               f"No LoRA found in {self.lora_dir}: it has no {WEIGHTS_NAME}. "
               "Train one first, or pick the folder the training wrote.")
        check(self.real_images_dir is not None and self.real_images_dir.is_dir(),
               f"Real photo folder {self.real_images_dir} does not exist; pass the folder of "
               "the subject's photos (or its prepared crops).")
        self._resolve_subject()
        if self.kind is None:
            self.kind = infer_kind(self.class_noun)
        check(self.kind in KINDS, f"kind must be 'object' or 'live' (got {self.kind!r}).")
        if self.prompts is not None:
            self.prompts = [p.strip() for p in self.prompts if p and p.strip()]
            check(bool(self.prompts), "The prompt list is empty; leave it unset to use the "
                                       "paper's 25 prompts.")
        check(self.num_prompts is None or self.num_prompts >= 1,
               f"number of prompts must be at least 1 (got {self.num_prompts}).")
        check(1 <= self.images_per_prompt <= 16,
               f"images per prompt must be 1-16 (got {self.images_per_prompt}).")
        for name in ("dino_model", "clip_model"):
            check(bool(str(getattr(self, name)).strip()), f"{name} is empty.")
        # The generation settings are GenerateConfig's: let it check them with its messages.
        self.generate_config(self.prompt_pairs()[0][0])

    def _resolve_subject(self) -> None:
        for name in ("identifier", "class_noun"):
            value = getattr(self, name)
            setattr(self, name, " ".join(value.split()) if value and value.strip() else None)
        if self.identifier and self.class_noun:
            return
        train_config = read_lora_info(self.lora_dir).get("config") or {}
        instance_prompt = train_config.get("instance_prompt")
        if not instance_prompt:
            raise InputError(
                f"The LoRA in {self.lora_dir} has no saved training prompt ({CONFIG_NAME} is "
                "missing or has none), so its identifier and class noun are unknown: give "
                "them explicitly (e.g. --identifier sks --class-noun dog)."
            )
        identifier, class_noun = split_instance_prompt(
            instance_prompt, self.class_noun, train_config.get("class_prompt")
        )
        self.identifier = self.identifier or identifier
        self.class_noun = self.class_noun or class_noun

    def prompt_pairs(self) -> list[tuple[str, str]]:
        """(prompt to generate, prompt without the identifier for CLIP-T), in order."""
        templates = self.prompts if self.prompts is not None else list(templates_for(self.kind))
        if self.num_prompts is not None:
            templates = templates[: self.num_prompts]
        return [
            (fill(t, self.identifier, self.class_noun),
             fill(without_identifier(t, self.identifier), self.identifier, self.class_noun))
            for t in templates
        ]

    def generate_config(self, prompt: str) -> GenerateConfig:
        return GenerateConfig(
            prompt=prompt, lora_dir=self.lora_dir, negative_prompt=self.negative_prompt,
            unet_scale=self.unet_scale, text_encoder_scale=self.text_encoder_scale,
            guidance=self.guidance, steps=self.steps, seed=self.seed,
            num_images=self.images_per_prompt, height=self.height, width=self.width,
        )

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


@dataclass
class EvalProgress:
    phase: str  # "loading", "generating", "done", "cancelled"
    done: int = 0  # sampler steps finished over all prompts
    total: int = 0
    message: str = ""


@dataclass
class PromptRow:
    prompt: str  # what was generated, with the identifier
    clip_t_prompt: str  # what CLIP-T compared with: the prompt without the identifier
    dino: float
    clip_i: float
    clip_t: float
    images: list[str] = field(default_factory=list)  # relative to the output folder


@dataclass
class EvalReport:
    config: dict
    model: str
    rows: list[PromptRow] = field(default_factory=list)
    real_images: list[str] = field(default_factory=list)
    skipped_real_images: list[tuple[str, str]] = field(default_factory=list)
    # The user's photos compared with each other: this subject's ceiling, like the paper's
    # "Real images" row. None where there is only one photo.
    real_photos: dict[str, float | None] = field(default_factory=dict)
    reference: tuple[ReferenceRow, ...] = PAPER_REFERENCE
    status: str = "completed"  # or "cancelled" (rows then hold the prompts finished)
    seconds: float = 0.0

    @property
    def means(self) -> dict[str, float | None]:
        """Each metric averaged over the prompt rows (every prompt has as many images, so
        this is also the mean over all generated images, as in the paper)."""
        if not self.rows:
            return {m: None for m in METRICS}
        return {m: sum(getattr(r, m) for r in self.rows) / len(self.rows) for m in METRICS}

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "model": self.model,
            "lora_dir": self.config.get("lora_dir"),
            "identifier": self.config.get("identifier"),
            "class_noun": self.config.get("class_noun"),
            "kind": self.config.get("kind"),
            "dino_model": self.config.get("dino_model"),
            "clip_model": self.config.get("clip_model"),
            "config": self.config,
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "means": self.means,
            "real_photos": self.real_photos,
            "reference": [dataclasses.asdict(r) for r in self.reference],
            "real_images": self.real_images,
            "skipped_real_images": [list(s) for s in self.skipped_real_images],
            "seconds": round(self.seconds, 2),
        }

    def to_csv(self) -> str:
        """Prompt rows, then the mean row, then the paper's rows (n/a left empty)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["row", "prompt", "clip_t_prompt", "dino", "clip_i", "clip_t", "images"])

        def number(value):
            return "" if value is None else f"{value:.6f}"

        for r in self.rows:
            writer.writerow(["prompt", r.prompt, r.clip_t_prompt, number(r.dino),
                             number(r.clip_i), number(r.clip_t), ";".join(r.images)])
        means = self.means
        writer.writerow(["mean", f"mean of {len(self.rows)} prompts", "",
                         *(number(means[m]) for m in METRICS), ""])
        for ref in self.reference:
            writer.writerow(["reference", ref.name, "", number(ref.dino), number(ref.clip_i),
                             number(ref.clip_t), ""])
        return buffer.getvalue()

    def write(self, output_dir: Path) -> tuple[Path, Path]:
        """Write fidelity.json and fidelity.csv, each atomically; return their paths."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        json_path, csv_path = output_dir / JSON_NAME, output_dir / CSV_NAME
        atomic_write_json(json_path, self.to_dict())
        atomic_write_text(csv_path, self.to_csv())
        return json_path, csv_path


ProgressFn = Callable[[EvalProgress], None]


def _slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "prompt"


def _embed_real_photos(folder: Path, dino: DinoScorer, clip: ClipScorer):
    files, skipped = image_files(folder), []
    dino_rows, clip_rows, used = [], [], []
    for start in range(0, len(files), _REAL_CHUNK):
        images = []
        for path in files[start:start + _REAL_CHUNK]:
            try:
                images.append(open_rgb(path))
                used.append(path)
            except (ImageRejected, OSError) as exc:
                skipped.append((str(path), str(exc)))
        if images:
            dino_rows.append(dino.embed_images(images))
            clip_rows.append(clip.embed_images(images))
    if not used:
        detail = f" ({len(skipped)} file(s) could not be read)" if skipped else ""
        raise InputError(
            f"No usable photos of the subject in {folder}{detail}. Pass the folder of the "
            "photos the LoRA was trained on (JPEG/PNG/WebP), or its prepared crops."
        )
    return torch.cat(dino_rows), torch.cat(clip_rows), used, skipped


def evaluate(
    config: EvalConfig,
    generator: Generator,
    output_dir: Path,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    *,
    dino: DinoScorer | None = None,
    clip: ClipScorer | None = None,
) -> EvalReport:
    """Generate every prompt's images with `generator` (one cached pipeline) and score them.

    Images go to `output_dir/images/NN_prompt/`; on completion fidelity.json and fidelity.csv
    are written to `output_dir`. Pass `dino` / `clip` to reuse scorers across runs. A cancel
    stops within one sampler step and returns the finished prompts with status "cancelled",
    keeping no images of the interrupted prompt and writing no result files.
    """
    start = time.monotonic()
    output_dir = Path(output_dir)
    emit = progress or (lambda p: None)
    pairs = config.prompt_pairs()
    total = len(pairs) * config.steps
    report = EvalReport(config=config.to_dict(), model=str(generator.model))

    # Scorers and real photos first: a wrong model id fails now, not after the generation.
    emit(EvalProgress("loading", 0, total, "Loading the DINO and CLIP models"))
    dino = dino or DinoScorer(config.dino_model, device=generator.device)
    clip = clip or ClipScorer(config.clip_model, device=generator.device)
    emit(EvalProgress("loading", 0, total, f"Embedding the photos in {config.real_images_dir}"))
    real_dino, real_clip, used, skipped = _embed_real_photos(config.real_images_dir, dino, clip)
    report.real_images = [str(p) for p in used]
    report.skipped_real_images = skipped
    report.real_photos = {"dino": self_similarity(real_dino),
                          "clip_i": self_similarity(real_clip)}
    text_emb = clip.embed_texts([text for _, text in pairs])

    for i, (prompt, text) in enumerate(pairs):
        if cancel is not None and cancel.is_set():
            break
        message = f"Prompt {i + 1}/{len(pairs)}: {prompt}"
        emit(EvalProgress("generating", i * config.steps, total, message))

        def on_step(step, steps, offset=i * config.steps, message=message):
            # PNDM (SD 1.x's default sampler) runs one step more than asked: clamp, so the
            # count never spills into the next prompt's share.
            emit(EvalProgress("generating", offset + min(step, config.steps), total, message))

        folder = output_dir / IMAGES_DIR / f"{i + 1:02d}_{_slug(prompt)}"
        generated = generator.generate(config.generate_config(prompt), folder, on_step, cancel)
        if cancel is not None and cancel.is_set():
            # The interrupted prompt's images are half-denoised: keep none of them.
            for item in generated:
                if item.path is not None:
                    item.path.unlink(missing_ok=True)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            break
        images = [g.image for g in generated]
        gen_clip = clip.embed_images(images)
        report.rows.append(PromptRow(
            prompt=prompt,
            clip_t_prompt=text,
            dino=subject_fidelity(dino.embed_images(images), real_dino),
            clip_i=subject_fidelity(gen_clip, real_clip),
            clip_t=prompt_fidelity(gen_clip, text_emb[i].expand(len(images), -1)),
            images=[g.path.relative_to(output_dir).as_posix() for g in generated if g.path],
        ))

    report.seconds = time.monotonic() - start
    if len(report.rows) < len(pairs):
        report.status = "cancelled"
        emit(EvalProgress("cancelled", len(report.rows) * config.steps, total,
                          f"Evaluation cancelled after {len(report.rows)} of {len(pairs)} "
                          "prompts; no fidelity files were written."))
        return report
    json_path, _ = report.write(output_dir)
    emit(EvalProgress("done", total, total, f"Scores written to {json_path}"))
    return report


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_table(report: EvalReport, width: int = 56) -> str:
    """Plain-text table: one line per prompt, the mean, this subject's photos, the paper."""

    def cells(label: str, values: list[str]) -> str:
        label = label if len(label) <= width else label[: width - 3] + "..."
        return f"{label:<{width}}" + "".join(f"  {v:>6}" for v in values)

    def line(label: str, dino, clip_i, clip_t) -> str:
        return cells(label, [_score(dino), _score(clip_i), _score(clip_t)])

    header = cells("Prompt", ["DINO", "CLIP-I", "CLIP-T"])
    rule = "-" * len(header)
    lines = [header, rule]
    for r in report.rows:
        lines.append(line(r.prompt, r.dino, r.clip_i, r.clip_t))
    means = report.means
    lines += [rule, line(f"Mean of {len(report.rows)} prompts", means["dino"],
                         means["clip_i"], means["clip_t"])]
    if report.real_photos.get("dino") is not None:
        lines.append(line("Your photos, each vs the others", report.real_photos["dino"],
                          report.real_photos["clip_i"], None))
    lines.append(rule)
    lines += [line(ref.name, ref.dino, ref.clip_i, ref.clip_t) for ref in report.reference]
    if report.status != "completed":
        lines.append(f"(cancelled: {len(report.rows)} prompts scored)")
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `evaluate` subcommand to the CLI's subparsers; return its parser."""
    e = subparsers.add_parser(
        "evaluate",
        help="Score a LoRA with the DreamBooth paper's DINO, CLIP-I and CLIP-T metrics.",
    )
    e.add_argument("--model", default=None,
                   help="Base model (Hub id, diffusers folder or file); default: the one the "
                        "LoRA was trained on.")
    e.add_argument("--model-config", default=None,
                   help="Diffusers config folder for a single-file checkpoint (offline use).")
    e.add_argument("--lora", type=Path, required=True, help="Folder of the trained LoRA.")
    e.add_argument("--real-dir", type=Path, required=True,
                   help="The subject's real photos (or the prepared crops).")
    e.add_argument("--output", type=Path, required=True,
                   help="Folder for the images, fidelity.json and fidelity.csv.")
    e.add_argument("--identifier", default=None,
                   help="Unique identifier, e.g. sks; default: from the LoRA's training prompt.")
    e.add_argument("--class-noun", default=None,
                   help="Class noun, e.g. dog; default: from the LoRA's training prompt.")
    e.add_argument("--kind", choices=KINDS, default=None,
                   help="Prompt list; default: live for cats, dogs and people, else object.")
    e.add_argument("--images-per-prompt", type=_positive_int, default=4)
    e.add_argument("--num-prompts", type=_positive_int, default=None,
                   help="Only the first N of the 25 prompts (quick runs).")
    e.add_argument("--steps", type=_positive_int, default=50)
    e.add_argument("--guidance", type=float, default=7.5)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--unet-scale", type=float, default=1.0)
    e.add_argument("--text-encoder-scale", type=float, default=1.0)
    e.add_argument("--height", type=int, default=None)
    e.add_argument("--width", type=int, default=None)
    e.add_argument("--dino-model", default=DEFAULT_DINO_MODEL,
                   help="DINO ViT: Hub id or local folder.")
    e.add_argument("--clip-model", default=DEFAULT_CLIP_MODEL,
                   help="CLIP model: Hub id or local folder.")
    e.add_argument("--device", default=None, help="cpu, cuda or mps (default: best found).")
    return e


def run(args) -> int:
    """The `evaluate` command: generate, score, print the table; 0 on success."""
    import sys

    from ..core.models import DEFAULT_MODEL
    from ..generate.generator import Generator

    config = EvalConfig(
        lora_dir=args.lora, real_images_dir=args.real_dir, identifier=args.identifier,
        class_noun=args.class_noun, kind=args.kind, images_per_prompt=args.images_per_prompt,
        num_prompts=args.num_prompts, steps=args.steps, guidance=args.guidance, seed=args.seed,
        unet_scale=args.unet_scale, text_encoder_scale=args.text_encoder_scale,
        height=args.height, width=args.width, dino_model=args.dino_model,
        clip_model=args.clip_model,
    )
    model = args.model
    model_config = args.model_config
    if model is None:
        trained = read_lora_info(config.lora_dir).get("config") or {}
        model = trained.get("model") or DEFAULT_MODEL
        model_config = model_config or trained.get("model_config_dir")
    print(f"Evaluating {config.lora_dir} on {model}: identifier '{config.identifier}', "
          f"class '{config.class_noun}', {config.kind} prompts", flush=True)
    generator = Generator(model, device=args.device, model_config_dir=model_config)

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
