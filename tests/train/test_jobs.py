"""The background job's bookkeeping, with a stand-in trainer (no model, instant)."""

from __future__ import annotations

import threading
import time

from dreamstudio.config import TrainConfig
from dreamstudio.train.events import TrainProgress, TrainResult
from dreamstudio.train.jobs import JobStatus, TrainingJobs


def _config(tmp_path) -> TrainConfig:
    return TrainConfig(instance_dir=tmp_path, instance_prompt="a photo of sks dog",
                       output_dir=tmp_path / "out", steps=3)


class FakeTrainer:
    """Reports 'loading' and then waits, like a trainer loading a large model."""

    def __init__(self, first_step: int = 0):
        self.loaded = threading.Event()
        self.go_on = threading.Event()
        self.first_step = first_step

    def __call__(self, config, progress, cancel):
        progress(TrainProgress("loading", total_steps=config.steps, message="Loading"))
        self.loaded.set()
        self.go_on.wait(10)
        if self.first_step:  # a resumed run: no loss with the "resumed" report
            progress(TrainProgress("training", step=self.first_step,
                                   total_steps=config.steps))
        for step in range(self.first_step + 1, config.steps + 1):
            progress(TrainProgress("training", step=step, total_steps=config.steps,
                                   loss=1.0 / step, elapsed=0.0))
        return TrainResult("completed", config.output_dir, None, config.steps, 0.3, 0.0)


def test_elapsed_counts_from_the_start_while_the_model_loads(tmp_path):
    fake = FakeTrainer()
    jobs = TrainingJobs(train_fn=fake)
    before = time.time()
    jobs.start(_config(tmp_path))
    assert fake.loaded.wait(5)
    time.sleep(0.3)
    status = jobs.status()
    assert status.progress.phase == "loading" and status.progress.elapsed == 0.0
    assert before <= status.started_at <= time.time()
    assert status.elapsed >= 0.3  # the trainer's own clock has not started yet
    fake.go_on.set()
    done = jobs.wait(5)
    assert done.state == "completed" and done.finished_at is not None
    frozen = done.elapsed
    time.sleep(0.2)
    assert jobs.status().elapsed == frozen  # a finished job's time stops


def test_losses_keep_their_steps_when_a_run_resumes(tmp_path):
    fake = FakeTrainer(first_step=1)
    fake.go_on.set()
    jobs = TrainingJobs(train_fn=fake)
    jobs.start(_config(tmp_path))
    status = jobs.wait(5)
    assert status.loss_steps == [2, 3]
    assert status.losses == [0.5, 1 / 3]


def test_a_status_is_a_snapshot(tmp_path):
    fake = FakeTrainer()
    fake.go_on.set()
    jobs = TrainingJobs(train_fn=fake)
    jobs.start(_config(tmp_path))
    status = jobs.wait(5)
    status.losses.clear()
    status.loss_steps.clear()
    assert len(jobs.status().losses) == len(jobs.status().loss_steps) == 3


def test_an_idle_job_has_no_elapsed_time():
    assert JobStatus().elapsed == 0.0
