"""The background job's bookkeeping, with a stand-in trainer (no model, instant)."""

from __future__ import annotations

import threading

from dreamstudio.config import TrainConfig
from dreamstudio.train import jobs as jobs_module
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


class Clock:
    """Stands in for the wall clock of the jobs module: time moves only when told to."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def time(self) -> float:
        return self.now


def test_elapsed_counts_from_the_start_while_the_model_loads_and_stops_at_the_end(
    tmp_path, monkeypatch
):
    clock = Clock()
    monkeypatch.setattr(jobs_module, "time", clock)
    fake = FakeTrainer()
    jobs = TrainingJobs(train_fn=fake)
    assert jobs.status().elapsed == 0.0  # no job yet
    jobs.start(_config(tmp_path))
    assert fake.loaded.wait(5)
    clock.now = 1007.5
    status = jobs.status()
    assert status.progress.phase == "loading" and status.progress.elapsed == 0.0
    assert status.started_at == 1000.0
    assert status.elapsed == 7.5  # the trainer's own clock has not started yet
    clock.now = 1010.0
    assert jobs.status().elapsed == 10.0  # and it goes on while the job runs
    fake.go_on.set()
    done = jobs.wait(5)
    assert done.state == "completed" and done.finished_at == 1010.0
    clock.now = 2000.0
    assert done.elapsed == jobs.status().elapsed == 10.0  # a finished job's time stops


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


def test_an_idle_job_has_no_elapsed_time(monkeypatch):
    monkeypatch.setattr(jobs_module, "time", Clock())
    assert JobStatus().elapsed == 0.0
    assert JobStatus(started_at=990.0).elapsed == 10.0  # a started one has


def test_a_second_run_is_refused_saying_what_the_first_is_doing(tmp_path):
    import pytest

    from dreamstudio.errors import TrainingError

    fake = FakeTrainer()
    jobs = TrainingJobs(train_fn=fake)
    first = _config(tmp_path)
    jobs.start(first)
    assert fake.loaded.wait(5)
    with pytest.raises(TrainingError) as refused:
        jobs.start(_config(tmp_path))
    message = str(refused.value)
    assert f"in progress for {first.output_dir} (loading, before its first step)" in message
    assert "0/0" not in message and "step 0" not in message

    jobs._on_progress(TrainProgress("training", step=2, total_steps=3, loss=0.5))
    with pytest.raises(TrainingError, match=r"\(step 2 of 3\)"):
        jobs.start(_config(tmp_path))
    fake.go_on.set()
    assert jobs.wait(5).state == "completed"
