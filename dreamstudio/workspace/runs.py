"""A subject's training runs on disk: which exist, how far each got, with which settings.

A run is the folder loras/<run>/ of a subject. It may hold a finished LoRA, resumable
checkpoints (checkpoints/step-NNNNNN/), or both; run_settings.json keeps the settings it
was started with, so that resuming can start from exactly those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig
from ..lora.files import atomic_write_json, is_lora_dir, read_lora_info
from ..train.checkpoints import latest_checkpoint

# What a resume must match is the train room's to say; a run's checkpoint settings are read
# here for those who describe runs.
from ..train.resume import checkpoint_settings as checkpoint_settings

SETTINGS_FILE = "run_settings.json"


@dataclass
class RunInfo:
    name: str
    path: Path
    exists: bool = False
    has_lora: bool = False
    checkpoint_step: int | None = None
    settings: dict = field(default_factory=dict)  # TrainConfig.to_dict() of the run, if known

    @property
    def total_steps(self) -> int | None:
        return self.settings.get("steps")

    @property
    def resumable(self) -> bool:
        return self.checkpoint_step is not None


def run_exists(path: Path) -> bool:
    """True once anything was written for the run (log, checkpoint or LoRA)."""
    path = Path(path)
    return path.is_dir() and any(path.iterdir())


def save_run_settings(config: TrainConfig) -> None:
    atomic_write_json(Path(config.output_dir) / SETTINGS_FILE, config.to_dict())


def load_run_settings(path: Path) -> dict:
    """The settings the run was started with: run_settings.json, else the finished LoRA's
    record of them, else {} (e.g. a run started from the command line and never finished)."""
    try:
        return json.loads((Path(path) / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return dict(read_lora_info(path).get("config", {}))


def describe_run(path: Path) -> RunInfo:
    path = Path(path)
    if not run_exists(path):
        return RunInfo(path.name, path)
    checkpoint = latest_checkpoint(path)
    return RunInfo(path.name, path, True, is_lora_dir(path),
                   checkpoint.step if checkpoint else None, load_run_settings(path))


def list_runs(loras_dir: Path) -> list[RunInfo]:
    folder = Path(loras_dir)
    if not folder.is_dir():
        return []
    return [describe_run(p) for p in sorted(folder.iterdir())
            if p.is_dir() and not p.name.startswith(".") and run_exists(p)]


def free_run_name(loras_dir: Path, name: str) -> str:
    """`name` if no run has it yet, else the first free 'name-2', 'name-3', ..."""
    if not run_exists(Path(loras_dir) / name):
        return name
    n = 2
    while run_exists(Path(loras_dir) / f"{name}-{n}"):
        n += 1
    return f"{name}-{n}"
