"""Scoring a LoRA the way the DreamBooth paper does: DINO, CLIP-I and CLIP-T.

For each evaluation prompt, generate images with the LoRA, then compare them with the
subject's real photos (DINO, CLIP-I: subject fidelity) and with the prompt without the
identifier (CLIP-T: prompt fidelity). Results go to fidelity.json and fidelity.csv beside
the images, with the paper's Table 1 rows for comparison.

The settings are EvalConfig's (evaluate/config.py), the results EvalReport's
(evaluate/report.py); both are importable from here as well.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..data.images import ImageRejected, open_rgb
from ..data.manifest import image_files, scoring_files
from ..errors import InputError
from .config import EvalConfig
from .metrics import prompt_fidelity, self_similarity, subject_fidelity
from .report import CSV_NAME, JSON_NAME, METRICS, EvalReport, PromptRow, format_table
from .scorers import ClipScorer, DinoScorer

if TYPE_CHECKING:
    from ..generate.generator import Generator

__all__ = [
    "CSV_NAME", "IMAGES_DIR", "JSON_NAME", "METRICS", "EvalConfig", "EvalProgress",
    "EvalReport", "PromptRow", "evaluate", "format_table",
]

IMAGES_DIR = "images"
# Real photos are embedded a few at a time: a folder of 12 MP photos would not fit at once.
_REAL_CHUNK = 8


@dataclass
class EvalProgress:
    phase: str  # "loading", "generating", "done", "cancelled"
    done: int = 0  # sampler steps finished over all prompts
    total: int = 0
    message: str = ""


ProgressFn = Callable[[EvalProgress], None]


def _slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "prompt"


def real_photo_files(folder: Path) -> tuple[list[Path], str]:
    """The photos subject fidelity is measured against, and which kind they are: the ones
    kept for scoring only when there are any (training never saw them), else the training
    photos."""
    held = scoring_files(folder)
    return (held, "held_out") if held else (image_files(folder), "training")


def _embed_real_photos(files: list[Path], folder: Path, dino: DinoScorer, clip: ClipScorer):
    skipped = []
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
    report.preprocessing = {"dino": dino.preprocessing, "clip": clip.preprocessing}
    emit(EvalProgress("loading", 0, total, f"Embedding the photos in {config.real_images_dir}"))
    files, report.compared_with = real_photo_files(config.real_images_dir)
    real_dino, real_clip, used, skipped = _embed_real_photos(
        files, config.real_images_dir, dino, clip)
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
