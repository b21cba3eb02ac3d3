"""The trained LoRA the generation tests share (read-only: no test writes into it)."""

from __future__ import annotations

import pytest

from dreamstudio.config import TrainConfig
from dreamstudio.train.trainer import train


@pytest.fixture(scope="package")
def lora_dir(tiny_model, small_dog_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen-lora")
    # A high learning rate makes both LoRAs move far from zero in a few steps.
    train(TrainConfig(model=str(tiny_model), instance_dir=small_dog_dir,
                      instance_prompt="a photo of sks dog", output_dir=out, steps=15,
                      resolution=64, learning_rate=5e-3, text_encoder_lr=5e-3))
    return out


@pytest.fixture(scope="package")
def sdxl_lora_dir(tiny_sdxl_model, tmp_path_factory):
    """A LoRA of the tiny SDXL model on its UNet and both text encoders (seeded noise)."""
    from tests.support.sdxl_lora import save_sdxl_lora

    return save_sdxl_lora(tiny_sdxl_model, tmp_path_factory.mktemp("sdxl-lora"))
