"""Keeping a run's checkpoint as a LoRA of its own: a new run folder `<run>-step<N>`.

A scored run (score_checkpoints) may peak before its last step; its checkpoint there is
written out as a LoRA folder beside the run, with the run's settings, so that the Generate
and Evaluate pickers list it like any trained LoRA and nothing has to be trained again.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..lora.files import is_lora_dir, read_lora_info
from ..tune.candidates import export_checkpoint, run_candidates
from .runs import copy_run_settings, free_run_name, load_run_settings, run_exists


def kept_run_name(run: str, step: int) -> str:
    return f"{run}-step{step}"


def keep_checkpoint(loras_dir: Path, run: str, step: int) -> Path:
    """Write the checkpoint of `run` (in `loras_dir`) at `step` as a new run folder with
    the LoRA, its kohya file and the run's settings; return that folder (the one written
    before, if this checkpoint was kept already)."""
    loras_dir, run_dir = Path(loras_dir), Path(loras_dir) / run
    if not run_exists(run_dir):
        raise InputError(f"There is no run '{run}' in {loras_dir}: pick one from the run list.")
    checkpoints = {c.step: c for c in run_candidates(run_dir) if not c.is_final}
    candidate = checkpoints.get(step)
    if candidate is None:
        if is_lora_dir(run_dir) and read_lora_info(run_dir).get("steps_done") == step:
            raise InputError(
                f"Step {step} is the final LoRA of '{run}': it is in the Generate and "
                f"Evaluate LoRA lists already as '{run}', so there is nothing to keep.")
        kept = load_run_settings(run_dir).get("keep_checkpoints")
        have = ", ".join(str(s) for s in checkpoints) or "none"
        raise InputError(
            f"Run '{run}' has no checkpoint at step {step} any more: a run keeps only its "
            f"latest {kept or 'few'} checkpoints (steps it still has: {have}). Keep one of "
            "those, or raise 'Checkpoints to keep' before training the next run.")
    for kept in sorted(loras_dir.iterdir()):  # kept before: the same LoRA again, not a copy
        if (is_lora_dir(kept)
                and read_lora_info(kept).get("checkpoint_digest") == candidate.digest):
            return kept
    target = loras_dir / free_run_name(loras_dir, kept_run_name(run, step))
    export_checkpoint(candidate, target, run_dir, kohya=True)
    copy_run_settings(run_dir, target, steps=step)
    return target
