"""A subject's training runs on disk: which exist, how far each got, with which settings.

A run is the folder loras/<run>/ of a subject. It may hold a finished LoRA, resumable
checkpoints (checkpoints/step-NNNNNN/), or both; run_settings.json keeps the settings it
was started with, so that resuming can start from exactly those. Describing a run removes
what a killed attempt at it left, where that cannot be an attempt still writing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig, default_of
from ..core.files import atomic_write_json, safe_name
from ..errors import InputError
from ..lora.files import is_lora_dir, read_lora_info
from ..train.checkpoints import latest_checkpoint
from ..train.resume import STALE_AFTER_S, remove_leftovers
from .layout import Workspace

SETTINGS_FILE = "run_settings.json"
LOG_FILE = "train.log"
FIDELITY_FILE = "fidelity_log.json"


def run_log_path(run_dir: Path) -> Path:
    """The run's log: settings, losses every 10 steps, checkpoints, the end or the error."""
    return Path(run_dir) / LOG_FILE


def fidelity_log_path(run_dir: Path) -> Path:
    """The scores of the run's checkpoints (score_checkpoints), with the prompts drawn."""
    return Path(run_dir) / FIDELITY_FILE


@dataclass
class RunInfo:
    name: str
    path: Path
    exists: bool = False
    has_lora: bool = False
    checkpoint_step: int | None = None
    settings: dict = field(default_factory=dict)  # TrainConfig.to_dict() of the run, if known
    failure: str | None = None  # why its last attempt failed, as its log says

    @property
    def total_steps(self) -> int | None:
        return self.settings.get("steps")

    @property
    def resumable(self) -> bool:
        return self.checkpoint_step is not None


# The trainer's log lines that open and close an attempt (trainer.train writes them).
_STARTED, _FAILED = " run starting: ", " run failed: "
_LOG_TAIL = 256 * 1024  # the end of a long log is enough to find its last attempt


def run_failure(path: Path) -> str | None:
    """Why the run's last attempt failed (its log's error line), or None if it did not."""
    try:
        with open(run_log_path(path), "rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - _LOG_TAIL))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    failed = text.rfind(_FAILED)
    if failed < 0 or failed < text.rfind(_STARTED):
        return None
    return text[failed + len(_FAILED):].splitlines()[0].strip() or "unknown error"


def run_exists(path: Path) -> bool:
    """True once anything was written for the run (log, checkpoint or LoRA)."""
    path = Path(path)
    return path.is_dir() and any(path.iterdir())


def save_run_settings(config: TrainConfig) -> None:
    atomic_write_json(Path(config.output_dir) / SETTINGS_FILE, config.to_dict())


def copy_run_settings(source: Path, target: Path, **changes) -> None:
    """Give the run in `target` the settings of the run in `source`, with `changes` (e.g. a
    kept checkpoint's steps) and its own output folder; nothing if `source` has none."""
    settings = load_run_settings(source)
    if settings:
        atomic_write_json(Path(target) / SETTINGS_FILE,
                          {**settings, **changes, "output_dir": str(target)})


def load_run_settings(path: Path) -> dict:
    """The settings the run was started with: run_settings.json, else the finished LoRA's
    record of them, else {} (e.g. a run started from the command line and never finished)."""
    try:
        return json.loads((Path(path) / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return dict(read_lora_info(path).get("config", {}))


def describe_run(path: Path, training: Path | None = None) -> RunInfo:
    """What the run in `path` holds. Its stale temporaries go first, unless it is the
    run `training` (the one the app trains now): a CLI training in another process may
    be writing any run, so only those untouched for STALE_AFTER_S are taken for dead."""
    path = Path(path)
    if not run_exists(path):
        return RunInfo(path.name, path)
    if training is None or path.resolve() != Path(training).resolve():
        remove_leftovers(path, STALE_AFTER_S)
    checkpoint = latest_checkpoint(path)
    return RunInfo(path.name, path, True, is_lora_dir(path),
                   checkpoint.step if checkpoint else None, load_run_settings(path),
                   run_failure(path))


def list_runs(loras_dir: Path, training: Path | None = None) -> list[RunInfo]:
    """The runs in `loras_dir`, by name (describe_run says what `training` is)."""
    folder = Path(loras_dir)
    if not folder.is_dir():
        return []
    return [describe_run(p, training) for p in sorted(folder.iterdir())
            if p.is_dir() and not p.name.startswith(".") and run_exists(p)]


def free_run_name(loras_dir: Path, name: str) -> str:
    """`name` if no run has it yet, else the first free 'name-2', 'name-3', ..."""
    if not run_exists(Path(loras_dir) / name):
        return name
    n = 2
    while run_exists(Path(loras_dir) / f"{name}-{n}"):
        n += 1
    return f"{name}-{n}"


def check_run_name(loras_dir: Path, subject: str, run_name: str, resume: bool) -> None:
    """Refuse a new run over an existing one (its LoRA or checkpoints would be lost), naming
    a free name; and a resume of a run that has nothing to resume from."""
    run = describe_run(Path(loras_dir) / safe_name(run_name, "run"))
    if resume and not run.resumable:
        what = ("has a finished LoRA but no checkpoint" if run.has_lora
                else "has no checkpoint" if run.exists else "does not exist")
        raise InputError(
            f"Cannot resume '{subject} / {run_name}': the run {what}. Press Start "
            "training to begin a new run."
        )
    if not resume and run.exists:
        free = free_run_name(loras_dir, run_name)
        hint = (f", or press Resume to continue it from step {run.checkpoint_step}"
                if run.resumable else "")
        raise InputError(
            f"A run named '{run_name}' already exists for '{subject}'; starting again "
            f"would replace it. Choose another name (e.g. '{free}'){hint}."
        )



def training_config_for(workspace: Workspace, subject: str, instance_prompt: str,
                        run_name: str | None, class_prompt: str | None, resume: bool,
                        **settings) -> TrainConfig:
    """A TrainConfig for `subject` with the workspace's paths filled in (`settings` are the
    other TrainConfig fields, the base model among them).

    A new run never replaces an existing one of the same name (its LoRA or checkpoints
    would be lost): that is refused, naming a free name. resume=True continues the named
    run from its latest checkpoint instead.
    """
    if not workspace.has_photos(subject):
        raise InputError(
            f"Subject '{subject}' has no prepared photos: prepare them on the Data tab first."
        )
    if resume and not run_name:
        raise InputError("Choose the run to resume: pick it in the Run list.")
    run_name = run_name or time.strftime("run-%Y%m%d-%H%M%S")
    check_run_name(workspace.loras_dir(subject), subject, run_name, resume)
    class_dir = None
    if class_prompt and class_prompt.strip():
        resolution = settings.get("resolution", default_of(TrainConfig, "resolution"))
        class_dir = workspace.class_images_dir(settings["model"], class_prompt, resolution)
    return TrainConfig(instance_dir=workspace.photos_dir(subject),
                       instance_prompt=instance_prompt,
                       output_dir=workspace.run_dir(subject, run_name), class_dir=class_dir,
                       class_prompt=class_prompt, resume=resume, **settings)
