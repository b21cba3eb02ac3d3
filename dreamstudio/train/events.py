"""What a training run reports while it runs and when it ends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainProgress:
    phase: str  # loading, class_images, training, validation, scoring, saving, done, cancelled
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    elapsed: float = 0.0
    eta_seconds: float | None = None
    message: str = ""
    validation_images: list[str] = field(default_factory=list)
    # The scored checkpoints so far (score_checkpoints): {step, dino, clip_i, clip_t} each.
    fidelity: list[dict] = field(default_factory=list)
    # Why checkpoint scoring stopped for this run (a scorer that could not load), if it did.
    fidelity_note: str | None = None
    # A class image forming (a PIL image, in memory only: the JSON status leaves it out).
    preview: Any = None


@dataclass
class TrainResult:
    status: str  # "completed" or "cancelled"
    output_dir: Path
    lora_path: Path | None
    steps_done: int
    final_loss: float | None
    seconds: float
    losses: list[float] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    message: str = ""
    kohya_path: Path | None = None
    steps_per_second: float | None = None


ProgressFn = Callable[[TrainProgress], None]
