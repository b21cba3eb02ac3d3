"""Training checkpoints: everything needed to continue a run exactly where it stopped.

Each checkpoint is a folder `checkpoints/step-000050/` written under a temporary name
(`.writing-*`) and renamed into place, so a crash mid-write never leaves a checkpoint that
looks complete; `unfinished_checkpoints` are the ones being written or left by a killed
run. Their files and folders get the umask's modes like every other file, so the run can be
moved or shared as a whole.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..core.files import atomic_path, folder_mode
from ..errors import TrainingError

_NAME = re.compile(r"^step-(\d{6,})$")
_UNFINISHED = ".writing-"
STATE_FILE = "state.pt"
WEIGHTS_FILE = "lora.safetensors"
# Among a checkpoint's weights: the pivotal-tuning embedding rows (pivotal.py), on SDXL the
# second text encoder's too; its state names their identifier and token under "pivotal".
PIVOTAL_KEY = "pivotal.rows"
PIVOTAL_KEY_2 = "pivotal.rows_2"


@dataclass
class Checkpoint:
    path: Path
    step: int


def checkpoints_dir(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: Path) -> list[Checkpoint]:
    """Complete checkpoints, oldest first."""
    folder = checkpoints_dir(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _NAME.match(child.name)
        if match and (child / STATE_FILE).is_file() and (child / WEIGHTS_FILE).is_file():
            found.append(Checkpoint(child, int(match.group(1))))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(output_dir: Path) -> Checkpoint | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(output_dir: Path, step: int, weights: dict[str, torch.Tensor],
                    state: dict, keep: int) -> Path:
    folder = checkpoints_dir(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=_UNFINISHED))
    try:
        os.chmod(tmp, folder_mode())  # mkdtemp makes it 0700
        # atomic_path for its fsync and its modes (safetensors creates files 0600).
        with atomic_path(tmp / WEIGHTS_FILE) as part:
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()},
                      str(part))
        with atomic_path(tmp / STATE_FILE) as part:
            torch.save(state, part)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def unfinished_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoint folders still under their temporary name: being written, or left
    half-written by a killed run."""
    folder = checkpoints_dir(output_dir)
    return [p for p in folder.glob(f"{_UNFINISHED}*") if p.is_dir()] if folder.is_dir() else []


def _unreadable(checkpoint: Checkpoint, exc: Exception) -> TrainingError:
    # torch's own unpickling errors run over many lines with advice that does not apply.
    reason = str(exc) if isinstance(exc, OSError) else "damaged or not a DreamStudio checkpoint"
    return TrainingError(
        f"Checkpoint {checkpoint.path} is unreadable ({reason}); delete it to resume from "
        "the one before, or start the run again without resume."
    )


def load_state(checkpoint: Checkpoint) -> dict:
    """The checkpoint's state (step, settings, optimizer, random states), without weights."""
    try:
        return torch.load(checkpoint.path / STATE_FILE, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise _unreadable(checkpoint, exc) from exc


def load_checkpoint(checkpoint: Checkpoint) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        weights = load_file(str(checkpoint.path / WEIGHTS_FILE))
    except Exception as exc:
        raise _unreadable(checkpoint, exc) from exc
    return weights, load_state(checkpoint)
