"""The scored sweep: every cell drawn with the same prompts and seeds, scored, judged.

Stages of `run_sweep`:
1. plan: the cells (the base model at each guidance, then each candidate x text-encoder
   scale x UNet scale x guidance) and, per cell, one draw per prompt plus the leak draw;
2. scorers: the subject's photos embedded once (DINO, CLIP, faces for people);
3. draw and score, cell by cell: the base model first, then each candidate, so every
   LoRA loads once; images already on disk from an earlier sweep are reused;
4. judge: the rule's recommendation, then tune.json, tune.csv and tune.png.

Images live at images/<settings>/<candidate>-<weights digest>/<cell>/<prompt>/seed-N.png
under the run's sweep folder: the path names everything that decides the pixels, so a
file that exists is the image this sweep would draw, and a wider sweep finds the old ones.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from ..evaluate.metrics import leak_flagged
from ..lora.files import is_lora_dir
from .candidates import Candidate, choose_candidates, export_checkpoint
from .config import TuneConfig
from .report import write_result
from .results import BASE, CellScore, SweepPlan, SweepResult, TuneProgress
from .rule import recommend
from .scoring import SubjectScores

if TYPE_CHECKING:
    from ..evaluate.faces import FaceScorer
    from ..evaluate.scorers import ClipScorer, DinoScorer
    from ..generate.generator import Generator

IMAGES_DIR = "images"
CANDIDATES_DIR = "candidates"
ProgressFn = Callable[[TuneProgress], None]


@dataclass
class _Draw:
    """One generate call: a prompt's images (or the leak prompt's) in one cell."""

    prompt: str
    text: str | None  # the prompt without the identifier, for CLIP-T; None for leak draws
    folder: Path
    seeds: list[int]

    @property
    def paths(self) -> list[Path]:
        return [self.folder / f"seed-{s}.png" for s in self.seeds]

    @property
    def on_disk(self) -> bool:
        return all(_readable(p) for p in self.paths)


@dataclass
class _Cell:
    score: CellScore
    candidate: Candidate | None  # None for the base model
    draws: list[_Draw] = field(default_factory=list)
    leak: _Draw | None = None

    @property
    def all_draws(self) -> list[_Draw]:
        return self.draws + ([self.leak] if self.leak else [])


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except (OSError, SyntaxError, ValueError):  # missing, truncated or not a PNG
        return False


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "prompt"


def settings_key(config: TuneConfig, model: str) -> str:
    """A short digest of the settings that decide an image besides its cell, prompt and seed."""
    decisive = {"model": str(model), "steps": config.steps, "sampler": config.sampler,
                "height": config.height, "width": config.width,
                "negative_prompt": config.negative_prompt, "precision": config.precision}
    text = json.dumps(decisive, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _plan_cells(config: TuneConfig, candidates: list[Candidate], folder: Path,
                model: str) -> list[_Cell]:
    root = Path(folder) / IMAGES_DIR / settings_key(config, model)
    pairs = config.prompt_pairs()
    seeds = [config.seed + i for i in range(config.images_per_prompt)]
    leak_seeds = [config.seed + i for i in range(config.leak_images)]
    class_prompt = config.class_prompt_text()

    def cell(candidate: Candidate | None, unet: float, te: float, guidance: float) -> _Cell:
        if candidate is None:
            where = root / BASE / f"g{guidance:g}"
            score = CellScore(BASE, None, 0.0, 0.0, guidance)
        else:
            where = (root / f"{candidate.name}-{candidate.digest[:10]}"
                     / f"u{unet:g}-t{te:g}-g{guidance:g}")
            score = CellScore(candidate.name, candidate.step, unet, te, guidance)
        made = _Cell(score, candidate)
        made.draws = [_Draw(prompt, text, where / f"{i + 1:02d}-{_slug(prompt)}", seeds)
                      for i, (prompt, text) in enumerate(pairs)]
        if leak_seeds:
            made.leak = _Draw(class_prompt, None, where / f"leak-{_slug(class_prompt)}",
                              leak_seeds)
        return made

    cells = [cell(None, 0.0, 0.0, g) for g in config.guidances]
    for candidate in candidates:  # candidate-major: each LoRA loads once
        for te in config.text_encoder_scales:  # a text-encoder change re-encodes the prompts
            for unet in config.unet_scales:
                cells += [cell(candidate, unet, te, g) for g in config.guidances]
    return cells


def plan_sweep(config: TuneConfig, folder: Path, model: str) -> tuple[SweepPlan, list[_Cell]]:
    """What the sweep of `config` would draw into `folder` (nothing is drawn or loaded)."""
    candidates = choose_candidates(config.run_dir, config.candidates)
    cells = _plan_cells(config, candidates, folder, model)
    draws = [d for c in cells for d in c.all_draws]
    plan = SweepPlan(
        candidates=[c.name for c in candidates],
        cells=sum(1 for c in cells if c.candidate is not None),
        base_cells=sum(1 for c in cells if c.candidate is None),
        images=sum(len(d.seeds) for d in draws),
        to_draw=sum(len(d.seeds) for d in draws if not d.on_disk),
    )
    return plan, cells


def time_sweep(plan: SweepPlan, cells: list[_Cell], config: TuneConfig, generator: Generator,
               folder: Path) -> SweepPlan:
    """Fill the plan's time from a short timing: one image at 1 and at 3 sampler steps on
    the first cell still to draw (the first call also pays for loading the model)."""
    pending = next((c for c in cells if any(not d.on_disk for d in c.all_draws)), None)
    if pending is None:
        plan.seconds_per_image, plan.seconds_loading = 0.0, 0.0
        return plan
    lora_dir = _lora_dir(pending.candidate, folder, config)
    prompt = pending.draws[0].prompt
    s = pending.score

    def timed(steps: int) -> float:
        cfg = config.generate_config(prompt, lora_dir, s.unet_scale, s.text_encoder_scale,
                                     s.guidance, 1)
        cfg.steps = steps
        start = time.monotonic()
        generator.generate(cfg, None)
        return time.monotonic() - start

    first = timed(1)  # pays for loading the model and the cell's LoRA
    one = timed(1)
    three = timed(3)
    per_step = max(0.0, (three - one) / 2)
    plan.seconds_per_image = max(0.0, one - per_step) + per_step * config.steps
    plan.seconds_loading = max(0.0, first - one)
    return plan


def _lora_dir(candidate: Candidate | None, folder: Path, config: TuneConfig) -> Path | None:
    """The LoRA folder to draw a candidate with; a checkpoint is exported once, beside the
    sweep's images, under a name with its digest (a later checkpoint never reuses it)."""
    if candidate is None:
        return None
    if candidate.is_final:
        return candidate.source
    target = Path(folder) / CANDIDATES_DIR / f"{candidate.name}-{candidate.digest[:10]}"
    if not is_lora_dir(target):
        export_checkpoint(candidate, target, config.run_dir)
    return target


def _draw(draw: _Draw, cell: _Cell, lora_dir: Path | None, config: TuneConfig,
          generator: Generator, cancel: threading.Event | None,
          on_step: Callable[[int, int], None]) -> list[Image.Image] | None:
    """The draw's images, from disk or freshly drawn and saved; None when cancelled."""
    from ..generate.png_metadata import save_png_with_parameters

    s = cell.score
    cfg = config.generate_config(draw.prompt, lora_dir, s.unet_scale, s.text_encoder_scale,
                                 s.guidance, len(draw.seeds))
    made = generator.generate(cfg, None, progress=on_step, cancel=cancel)
    if cancel is not None and cancel.is_set():
        return None  # half-denoised: never saved, so a rerun draws them again
    for item in made:
        params = generator.image_parameters(cfg, item.seed, item.image.size,
                                            generator.sampler_label(config.sampler))
        save_png_with_parameters(item.image, draw.folder, params, stem=f"seed-{item.seed}")
    return [item.image for item in made]


def _open(paths: list[Path]) -> list[Image.Image]:
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def run_sweep(
    config: TuneConfig,
    generator: Generator,
    folder: Path,
    dino: DinoScorer,
    clip: ClipScorer,
    faces: FaceScorer | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> SweepResult:
    """Draw and score every cell of `config` into `folder` (the run's sweep folder).

    A cancel stops within one sampler step; the cells finished so far come back with status
    "cancelled" and no result files are written (their images stay, for the next sweep).
    """
    emit = progress or (lambda p: None)
    folder = Path(folder)
    # 1. plan
    plan, cells = plan_sweep(config, folder, generator.model)
    total = plan.images
    # 2. scorers: the photos embedded once, before anything is drawn (a wrong model id
    # fails now, not after an hour of drawing)
    emit(TuneProgress("loading", 0, total, "Embedding the subject's photos"))
    subject = SubjectScores(config.real_images_dir, dino, clip,
                            faces if config.scores_faces else None)
    result = SweepResult("completed", [], [], None, config.to_dict(), subject.compared_with,
                         subject.faces is not None, subject.preprocessing)
    done = 0
    # 3. draw and score, cell by cell
    for cell in cells:
        s = cell.score
        lora_dir = _lora_dir(cell.candidate, folder, config)
        drawn_images: dict[int, list[Image.Image]] = {}
        for index, draw in enumerate(cell.all_draws):
            if cancel is not None and cancel.is_set():
                break
            if draw.on_disk:
                drawn_images[index] = _open(draw.paths)
                result.reused += len(draw.seeds)
                s.reused += len(draw.seeds)
                done += len(draw.seeds)
                continue
            message = f"Drawing {s.label}: {draw.prompt}"
            # The plan's estimate comes from a short timing; once images are drawn, their
            # own pace says better what is left.
            eta = (result.seconds_drawing / result.drawn * (plan.to_draw - result.drawn)
                   if result.drawn else plan.seconds)
            emit(TuneProgress("drawing", done, total, message, eta_seconds=eta))

            def on_step(step, steps, message=message, done=done, eta=eta):
                emit(TuneProgress("drawing", done, total, f"{message} (step {step}/{steps})",
                                  eta_seconds=eta))

            start = time.monotonic()
            images = _draw(draw, cell, lora_dir, config, generator, cancel, on_step)
            result.seconds_drawing += time.monotonic() - start
            if images is None:
                break
            drawn_images[index] = images
            result.drawn += len(images)
            done += len(images)
            emit(TuneProgress("drawing", done, total, message, images[-1],
                              result.seconds_drawing / result.drawn
                              * (plan.to_draw - result.drawn)))
        if len(drawn_images) < len(cell.all_draws):
            break  # cancelled inside this cell: it is left unscored
        start = time.monotonic()
        emit(TuneProgress("scoring", done, total, f"Scoring {s.label}"))
        prompt_images, texts = [], []
        for index, draw in enumerate(cell.draws):
            prompt_images += drawn_images[index]
            texts += [draw.text] * len(draw.seeds)
        scores = subject.score(prompt_images, texts)
        s.dino, s.clip_i, s.clip_t = scores.dino, scores.clip_i, scores.clip_t
        s.face, s.face_found, s.face_misses = scores.face, scores.face_found, scores.face_misses
        s.images = [p.relative_to(folder).as_posix() for d in cell.draws for p in d.paths]
        if cell.leak is not None:
            s.leak = subject.leak(drawn_images[len(cell.draws)])
            s.leak_images = [p.relative_to(folder).as_posix() for p in cell.leak.paths]
            base = next((b for b in result.base if b.guidance == s.guidance), None)
            if not s.is_base and base is not None and base.leak is not None:
                s.leak_flagged = leak_flagged(s.leak, base.leak, config.leak_margin)
        (result.base if s.is_base else result.cells).append(s)
        result.seconds_scoring += time.monotonic() - start
    # 4. judge
    if len(result.base) + len(result.cells) < len(cells):
        result.status = "cancelled"
        emit(TuneProgress("cancelled", done, total,
                          f"Sweep stopped after {len(result.cells)} of {plan.cells} cells; "
                          "the images drawn so far are kept for the next sweep."))
        return result
    result.recommendation = recommend(result.cells, result.base, config.clip_t_tolerance,
                                      result.uses_face)
    write_result(result, folder)
    emit(TuneProgress("done", total, total, result.recommendation.reason))
    return result
