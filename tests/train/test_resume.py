"""Whether a run can be resumed with a config: one check for the trainer and the app.

Checkpoints here are written by hand (no model), with the settings a real one records.
"""

from __future__ import annotations

import pytest
import torch

from dreamstudio.config import TrainConfig
from dreamstudio.errors import TrainingError
from dreamstudio.train.checkpoints import STATE_FILE, latest_checkpoint, load_state, save_checkpoint
from dreamstudio.train.resume import (
    RESUME_KEYS,
    check_resumable,
    resume_settings,
)

PROMPT = "a photo of sks dog"


def _config(tmp_path, **kw) -> TrainConfig:
    settings = {"model": "some/model", "resolution": 64, "steps": 10, "resume": True}
    settings.update(kw)
    return TrainConfig(instance_dir=tmp_path, instance_prompt=PROMPT,
                       output_dir=tmp_path / "run", **settings)


def _checkpoint(config: TrainConfig, step: int, **changed):
    settings = resume_settings(config) | changed
    return save_checkpoint(config.output_dir, step, {"w": torch.zeros(1)},
                           {"step": step, "settings": settings}, keep=2)


def test_a_checkpoint_records_every_setting_a_resume_must_match(tmp_path):
    config = _config(tmp_path, rank=8, seed=3)
    assert resume_settings(config) == {k: getattr(config, k) for k in RESUME_KEYS}
    assert {"model", "rank", "resolution", "seed", "batch_size"} <= set(RESUME_KEYS)
    _checkpoint(config, 4)
    saved = load_state(latest_checkpoint(config.output_dir))
    assert saved["settings"] == resume_settings(config)


def test_the_same_settings_resume_from_the_latest_checkpoint(tmp_path):
    config = _config(tmp_path)
    _checkpoint(config, 3)
    latest = _checkpoint(config, 6)
    checkpoint = check_resumable(config)
    assert (checkpoint.path, checkpoint.step) == (latest, 6)


def test_settings_that_differ_are_named_with_both_values(tmp_path):
    config = _config(tmp_path, rank=8, resolution=128)
    _checkpoint(config, 5, rank=4, resolution=64)
    with pytest.raises(TrainingError) as err:
        check_resumable(config)
    message = str(err.value)
    assert "rank (was 4, now 8)" in message and "resolution (was 64, now 128)" in message
    assert "'run'" in message and "step 5" in message and "start a new run" in message
    assert "seed" not in message  # only what differs is listed


def test_a_setting_outside_the_resume_keys_may_change(tmp_path):
    config = _config(tmp_path, learning_rate=1e-3, validation_every=7)
    _checkpoint(config, 5, learning_rate=5e-4)
    assert check_resumable(config).step == 5


def test_a_checkpoint_at_or_past_the_steps_asks_for_more_steps(tmp_path):
    config = _config(tmp_path, steps=5)
    _checkpoint(config, 5)
    with pytest.raises(TrainingError, match="at step 5; set Steps above 5"):
        check_resumable(config)
    assert check_resumable(_config(tmp_path, steps=6)).step == 5


def test_nothing_to_resume_without_a_complete_checkpoint(tmp_path):
    config = _config(tmp_path)
    with pytest.raises(TrainingError, match="Nothing to resume"):
        check_resumable(config)
    (config.output_dir / "checkpoints" / "step-000004").mkdir(parents=True)  # no files
    with pytest.raises(TrainingError, match="Nothing to resume"):
        check_resumable(config)


def test_an_unreadable_checkpoint_is_refused_with_what_to_do(tmp_path):
    config = _config(tmp_path)
    path = _checkpoint(config, 4)
    (path / STATE_FILE).write_bytes(b"not a torch file")
    with pytest.raises(TrainingError) as err:
        check_resumable(config)
    assert "unreadable (damaged or not a DreamStudio checkpoint)" in str(err.value)
    assert "delete it" in str(err.value) and "\n" not in str(err.value)
