"""Scoring checkpoints while a run trains (score_checkpoints): which step is the best LoRA.

At each checkpoint step, and at the end for the final LoRA, the pipeline draws a few of the
paper's prompts of the subject's kind with its current weights (fixed seeds, as validation
does) and `SubjectScores` scores them against the run's photos: DINO and CLIP-I (subject
fidelity) and CLIP-T (prompt fidelity). The points go to the progress reports, into the
checkpoint (so a resumed run still has the earlier ones) and to fidelity_log.json.

Scoring must not change training: the global random state is put back after each scoring
(loading a scorer builds its layers with random values before reading its weights), and the
training loop's own generator is never touched. A scorer that cannot load (no network for a
Hub id) stops the scoring for the run, never the run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from ..core.files import atomic_write_json
from ..evaluate.prompts import fill, infer_kind, templates_for, without_identifier
from ..evaluate.scorers import ClipScorer, DinoScorer
from ..tune.config import QUICK_TEMPLATES
from ..tune.scoring import SubjectScores
from ..workspace.runs import fidelity_log_path
from .identifiers import split_instance_prompt
from .session import TrainingSession
from .validation import draw_current

log = logging.getLogger("dreamstudio.training")

BEST_RULE = "highest DINO; on a tie the earlier step"
_DIGITS = 4  # scores are kept rounded: more digits are noise for 1-8 images


@dataclass
class CheckpointScoring:
    """What scoring a run needs, made at its first scoring: prompts and loaded scorers."""

    prompts: list[str] = field(default_factory=list)  # what is drawn
    texts: list[str] = field(default_factory=list)  # what CLIP-T compares with (no identifier)
    subject: SubjectScores | None = None


def best_point(points: list[dict]) -> dict | None:
    """The best scored step (BEST_RULE): the highest DINO, the earlier of equal ones."""
    best = None
    for point in sorted(points, key=lambda p: p["step"]):
        if best is None or point["dino"] > best["dino"]:
            best = point
    return best


def scoring_prompts(instance_prompt: str, class_prompt: str | None, count: int,
                    tokenizer=None) -> tuple[list[str], list[str]]:
    """The `count` prompts a scored checkpoint draws (the sweep's quick prompts of the
    subject's kind first, then the paper's others) and their CLIP-T texts."""
    identifier, noun = split_instance_prompt(instance_prompt, class_prompt=class_prompt,
                                             tokenizer=tokenizer)
    kind = infer_kind(noun)
    quick = QUICK_TEMPLATES[kind]
    templates = [*quick, *(t for t in templates_for(kind) if t not in quick)][:count]
    return ([fill(t, identifier, noun) for t in templates],
            [fill(without_identifier(t, identifier), identifier, noun) for t in templates])


def _prepare(session: TrainingSession) -> CheckpointScoring:
    """Prompts and scorers: any failure here (a scorer that does not load, no usable
    photo, no identifier in the prompt) is raised for score_checkpoint to report."""
    cfg = session.config
    prompts, texts = scoring_prompts(cfg.instance_prompt, cfg.class_prompt, cfg.score_images,
                                     session.pipe.tokenizer)
    dino = DinoScorer(cfg.score_dino_model, device=session.device)
    clip = ClipScorer(cfg.score_clip_model, device=session.device)
    subject = SubjectScores(cfg.instance_dir, dino, clip)
    log.info("checkpoint scoring: %s against %d %s photo(s) of %s", prompts,
             len(subject.used), subject.compared_with, cfg.instance_dir)
    return CheckpointScoring(prompts, texts, subject)


def _stop(session: TrainingSession, step: int, exc: Exception) -> None:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    session.fidelity_note = f"Checkpoint scoring is off for this run: {reason}"
    log.warning("checkpoint scoring stopped at step %d: %s", step, reason)
    # Not a "training" report: the job would take its loss for another point of the curve.
    session.emit("scoring", step, loss=session.losses[-1] if session.losses else None,
                 message=session.fidelity_note)


def _rng_devices(session: TrainingSession) -> list:
    return [session.device] if session.device.type == "cuda" else []


def score_checkpoint(session: TrainingSession, step: int) -> dict | None:
    """Draw and score the current weights at `step` (when the run scores checkpoints);
    the point recorded, or None if none was."""
    cfg = session.config
    if not cfg.score_checkpoints or session.fidelity_note is not None:
        return None
    if session.accelerator.num_processes > 1:
        # The others would wait at the next barrier for minutes of drawing; not worth it.
        session.fidelity_note = ("Checkpoint scoring is off for this run: it scores only "
                                 "runs on one process.")
        log.warning("checkpoint scoring skipped: %d processes", session.accelerator.num_processes)
        return None
    loss = session.losses[-1] if session.losses else None
    session.emit("scoring", step, loss=loss, message=f"Scoring the LoRA at step {step}")
    started = time.monotonic()
    with torch.random.fork_rng(devices=_rng_devices(session)):
        if session.scoring is None:
            try:
                session.scoring = _prepare(session)
            except Exception as exc:  # noqa: BLE001 - a scorer must never end the run
                _stop(session, step, exc)
                return None
        scoring = session.scoring
        images = draw_current(session.pipe, [session.prompt(p) for p in scoring.prompts],
                              [cfg.seed + i for i in range(len(scoring.prompts))],
                              cfg.resolution, cfg.validation_steps,
                              autocast=session.accelerator.autocast())
        scores = scoring.subject.score(images, scoring.texts)
    point = {"step": step, "dino": round(scores.dino, _DIGITS),
             "clip_i": round(scores.clip_i, _DIGITS), "clip_t": round(scores.clip_t, _DIGITS)}
    # One point per step, in order, whatever an earlier attempt at the run recorded.
    session.fidelity = [p for p in session.fidelity if p["step"] < step] + [point]
    write_fidelity_log(session)
    log.info("scores at step %d: DINO %.4f CLIP-I %.4f CLIP-T %.4f (%.1f s)", step,
             point["dino"], point["clip_i"], point["clip_t"], time.monotonic() - started)
    session.emit("scoring", step, loss=loss,
                 message=f"Step {step}: DINO {point['dino']:.3f}, CLIP-I "
                         f"{point['clip_i']:.3f}, CLIP-T {point['clip_t']:.3f}")
    return point


def write_fidelity_log(session: TrainingSession) -> None:
    cfg, scoring = session.config, session.scoring
    best = best_point(session.fidelity)
    atomic_write_json(fidelity_log_path(cfg.output_dir), {
        "points": session.fidelity,
        "best_step": best["step"] if best else None,
        "best_rule": BEST_RULE,
        "prompts": scoring.prompts if scoring else [],
        "clip_t_texts": scoring.texts if scoring else [],
        "seeds": [cfg.seed + i for i in range(cfg.score_images)],
        "compared_with": scoring.subject.compared_with if scoring else None,
        "dino_model": cfg.score_dino_model,
        "clip_model": cfg.score_clip_model,
    }, sort_keys=False)
