"""The LoRAs a run offers to a sweep: its final LoRA and each saved checkpoint.

A checkpoint keeps its LoRA weights in the trainer's own layout; to be drawn with, scored,
or kept as a LoRA of its own it is written out as a LoRA folder (the diffusers file, its
record and, for a LoRA that is kept, the kohya file) by `export_checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.families import source_family
from ..core.files import file_digest
from ..errors import InputError, ModelLoadError
from ..lora.embeddings import save_embedding
from ..lora.files import (
    is_lora_dir,
    lora_alpha,
    lora_state_dicts,
    lora_weights_path,
    read_lora_info,
    save_lora,
    weights_family,
)
from ..lora.kohya import export_kohya, kohya_path
from ..train.checkpoints import (
    PIVOTAL_KEY,
    PIVOTAL_KEY_2,
    WEIGHTS_FILE,
    Checkpoint,
    list_checkpoints,
    load_state,
)
from ..workspace.runs import load_run_settings
from .results import FINAL


@dataclass(frozen=True)
class Candidate:
    name: str  # FINAL or the checkpoint's folder name, e.g. "step-000100"
    step: int | None  # the training step it was saved at (None: unknown for a final LoRA)
    source: Path  # the LoRA folder (final) or the checkpoint folder
    digest: str  # of its weights file: a retrained run never reuses the old images

    @property
    def is_final(self) -> bool:
        return self.name == FINAL

    @property
    def weights_file(self) -> Path:
        return lora_weights_path(self.source) if self.is_final else self.source / WEIGHTS_FILE

    @property
    def label(self) -> str:
        if self.is_final:
            return "final LoRA" + (f" (step {self.step})" if self.step else "")
        return f"checkpoint at step {self.step}"


def run_candidates(run_dir: Path) -> list[Candidate]:
    """Every LoRA of the run, checkpoints by step, then the final LoRA."""
    run_dir = Path(run_dir)
    found = [Candidate(c.path.name, c.step, c.path, file_digest(c.path / WEIGHTS_FILE))
             for c in list_checkpoints(run_dir)]
    if is_lora_dir(run_dir):
        steps = read_lora_info(run_dir).get("steps_done")
        found.append(Candidate(FINAL, steps, run_dir, file_digest(lora_weights_path(run_dir))))
    return found


def choose_candidates(run_dir: Path, names: list[str] | None) -> list[Candidate]:
    """The candidates `names` picks ('all' for every one; None: the final LoRA, else the
    last checkpoint), in the run's order."""
    found = run_candidates(run_dir)
    if not found:
        raise InputError(f"Run {Path(run_dir).name} has neither a LoRA nor a checkpoint to "
                         "try: train it first (with checkpoints, to compare steps).")
    if names is None:
        return [found[-1]]
    if "all" in names:
        return found
    by_name = {c.name: c for c in found}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InputError(f"Run {Path(run_dir).name} has no {', '.join(missing)}; it has "
                         f"{', '.join(by_name)}.")
    return [c for c in found if c.name in names]


def checkpoint_family(weights: dict, settings: dict) -> str | None:
    """The base model family of a checkpoint's LoRA without its run's record: SDXL when it
    adapts text encoder 2, else that of the run's base model, read from its folder, file or
    id (SD 1.x for one that is gone; None for one that cannot be read: SD 1.x's layout)."""
    family = weights_family(weights) or settings.get("family")
    if family is None and settings.get("model"):
        try:
            family = source_family(settings["model"], settings.get("model_config_dir"))
        except (OSError, ValueError, ModelLoadError):
            return None
    return family


def export_checkpoint(candidate: Candidate, target: Path, run_dir: Path,
                      kohya: bool = False) -> Path:
    """Write the checkpoint `candidate` as a LoRA folder `target` (weights first, each file
    atomically, so an interrupted export leaves no folder that looks finished)."""
    from safetensors.torch import load_file

    if candidate.is_final:
        raise ValueError("the final LoRA is a LoRA folder already")
    try:
        weights = load_file(str(candidate.weights_file))
    except Exception as exc:  # safetensors raises its own types for a damaged file
        raise InputError(f"Checkpoint {candidate.source} is unreadable ({exc}); pick another "
                         "one.") from exc
    settings = load_run_settings(run_dir)
    info = {**read_lora_info(run_dir), "format": "diffusers-lora", "config": settings,
            "steps_done": candidate.step, "from_checkpoint": candidate.name,
            "checkpoint_digest": candidate.digest,
            "subject_name": settings.get("subject_name") or Path(run_dir).name}
    # The family decides the files' layout (SDXL: text encoder 2, lora_te1_/lora_te2_);
    # a run cancelled before its final LoRA has no record of it.
    info["family"] = info.get("family") or checkpoint_family(weights, settings)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    # The token rows are the embedding's, not the LoRA's (SDXL: text encoder 2's as well).
    rows, rows_2 = weights.pop(PIVOTAL_KEY, None), weights.pop(PIVOTAL_KEY_2, None)
    info.pop("pivotal", None)  # the final LoRA's tokens, not this checkpoint's
    if rows is not None:
        token = load_state(Checkpoint(candidate.source, candidate.step))["pivotal"]
        info["pivotal"] = save_embedding(target, token["token"], token["identifier"], rows,
                                         rows_2)
    save_lora(target, *lora_state_dicts(weights), info)
    if kohya:
        export_kohya(weights, lora_alpha(settings), kohya_path(target, info), info)
    return target
