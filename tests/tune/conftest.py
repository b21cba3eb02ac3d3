"""A trained tiny run with a checkpoint and the tiny scorers, shared by the sweep tests
(read-only: every sweep writes into its own folder)."""

from __future__ import annotations

import pytest

from dreamstudio.config import TrainConfig
from dreamstudio.evaluate.scorers import ClipScorer, DinoScorer
from dreamstudio.train.trainer import train
from dreamstudio.workspace.runs import save_run_settings
from tests.support.tiny_scorers import build_tiny_scorers


@pytest.fixture(scope="package")
def run_dir(tiny_model, small_dog_dir, tmp_path_factory):
    """A run with a checkpoint at step 3 and its final LoRA at step 6."""
    config = TrainConfig(model=str(tiny_model), instance_dir=small_dog_dir,
                         instance_prompt="a photo of sks dog",
                         output_dir=tmp_path_factory.mktemp("tune-run"), steps=6,
                         checkpoint_every=3, resolution=64, learning_rate=5e-3,
                         text_encoder_lr=5e-3, validation_every=0)
    save_run_settings(config)
    train(config)
    return config.output_dir


@pytest.fixture(scope="package")
def scorer_dirs(tmp_path_factory):
    return build_tiny_scorers(tmp_path_factory.mktemp("tune-scorers"))


@pytest.fixture(scope="package")
def scorers(scorer_dirs):
    return (DinoScorer(str(scorer_dirs[0]), device="cpu"),
            ClipScorer(str(scorer_dirs[1]), device="cpu"))
