"""Training in a background thread: one run at a time, observable and cancellable."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..config import TrainConfig
from ..errors import DreamStudioError, TrainingError
from .events import TrainProgress, TrainResult
from .trainer import train

log = logging.getLogger(__name__)

OOM_ADVICE = (
    "The GPU ran out of memory. Try: batch size 1, a lower resolution (e.g. 384), "
    "gradient checkpointing or 8-bit Adam if available, or closing other GPU programs. "
    "The app keeps working; start training again with smaller settings."
)


@dataclass
class JobStatus:
    state: str = "idle"  # idle, running, completed, cancelled, failed
    progress: TrainProgress | None = None
    result: TrainResult | None = None
    error: str | None = None
    config: TrainConfig | None = None
    losses: list[float] = field(default_factory=list)
    # The step of each loss: a resumed run's first loss is at its checkpoint's step + 1.
    loss_steps: list[int] = field(default_factory=list)
    # Wall-clock times (time.time()) of the start and the end of the job. The trainer's own
    # progress.elapsed starts after the model has loaded, which can take minutes.
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def elapsed(self) -> float:
        """Seconds since the job started (until it ended, once it has); 0 if none ran."""
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.started_at)


def _how_far(progress: TrainProgress | None) -> str:
    """'step 40 of 300', or what it does before its first step (loading, class images)."""
    if progress is None:
        return "starting"
    if progress.step and progress.total_steps:
        return f"step {progress.step} of {progress.total_steps}"
    doing = progress.message or progress.phase
    return f"{doing[:1].lower()}{doing[1:]}, before its first step"


class TrainingJobs:
    def __init__(self, train_fn=train):
        self._train = train_fn
        self._lock = threading.Lock()
        self._status = JobStatus()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()

    def start(self, config: TrainConfig,
              accepted: Callable[[TrainConfig], None] | None = None) -> None:
        """Train `config` in the background. `accepted(config)` runs once the job is taken
        and before it starts: what it writes is there when training begins (and nothing is
        written for a refused job)."""
        with self._lock:
            if self._status.running:
                raise TrainingError(
                    f"A training run is already in progress for "
                    f"{self._status.config.output_dir} ({_how_far(self._status.progress)}). "
                    "Wait for it to finish or cancel it."
                )
            if accepted is not None:
                accepted(config)
            self._cancel = threading.Event()
            self._status = JobStatus("running", TrainProgress("queued", message="Starting"),
                                     config=config, started_at=time.time())
            self._thread = threading.Thread(
                target=self._run, args=(config, self._cancel), name="dreamstudio-train",
                daemon=True,
            )
            self._thread.start()

    def _on_progress(self, progress: TrainProgress) -> None:
        with self._lock:
            self._status.progress = progress
            if progress.phase == "training" and progress.loss is not None:
                self._status.losses.append(progress.loss)
                self._status.loss_steps.append(progress.step)

    def _run(self, config: TrainConfig, cancel: threading.Event) -> None:
        state, result, error = "failed", None, None
        try:
            result = self._train(config, progress=self._on_progress, cancel=cancel)
            state = result.status
        except torch.cuda.OutOfMemoryError:
            error = OOM_ADVICE
        except DreamStudioError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the app must survive any failure of a run
            log.error("training failed:\n%s", traceback.format_exc())
            error = f"Training failed unexpectedly: {type(exc).__name__}: {exc}"
        with self._lock:
            self._status.state = state
            self._status.result = result
            self._status.error = error
            self._status.finished_at = time.time()

    def status(self) -> JobStatus:
        with self._lock:
            s = self._status
            return dataclasses.replace(s, losses=list(s.losses), loss_steps=list(s.loss_steps))

    def cancel(self) -> bool:
        """Ask the running job to stop after its current step; False if nothing runs."""
        with self._lock:
            if not self._status.running:
                return False
            self._cancel.set()
            return True

    def wait(self, timeout: float | None = None) -> JobStatus:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()
