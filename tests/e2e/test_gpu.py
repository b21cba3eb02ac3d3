"""Checks that need a CUDA GPU; skipped on machines without one (like CI)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from dreamstudio.config import GenerateConfig, TrainConfig
from dreamstudio.generate.generator import Generator
from dreamstudio.train.trainer import train

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_training_keeps_lora_weights_fp32(tiny_model, small_dog_dir, tmp_path,
                                                          precision):
    result = train(TrainConfig(model=str(tiny_model), instance_dir=small_dog_dir,
                               instance_prompt="a photo of sks dog", output_dir=tmp_path,
                               steps=5, resolution=64, mixed_precision=precision,
                               device="cuda", validation_every=0, checkpoint_every=0))
    assert result.status == "completed"
    assert all(t.dtype == torch.float32 for t in load_file(str(result.lora_path)).values())


def test_generation_runs_in_fp16_on_cuda(tiny_model):
    generator = Generator(str(tiny_model), device="cuda")
    assert generator.dtype == torch.float16
    [image] = generator.generate(GenerateConfig(prompt="a photo of sks dog", steps=2,
                                                height=64, width=64))
    assert image.image.size == (64, 64)
