"""Models and prompts that would train silently wrong are refused before any training."""

from __future__ import annotations

import json
import shutil

import pytest

from dreamstudio.config import TrainConfig
from dreamstudio.errors import InputError, ModelLoadError
from dreamstudio.train.trainer import train


def test_a_model_that_predicts_the_sample_is_refused_by_name(tiny_model, small_dog_dir,
                                                            tmp_path):
    model = shutil.copytree(tiny_model, tmp_path / "sample-model")
    config_file = model / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config["prediction_type"] = "sample"
    config_file.write_text(json.dumps(config))
    out = tmp_path / "run"
    with pytest.raises(ModelLoadError, match=r"'sample'.*cannot train") as caught:
        train(TrainConfig(model=str(model), instance_dir=small_dog_dir, output_dir=out,
                          instance_prompt="a photo of sks dog", steps=1, resolution=64,
                          validation_every=0, checkpoint_every=0))
    assert str(model) in str(caught.value)
    assert not (out / "pytorch_lora_weights.safetensors").exists()
