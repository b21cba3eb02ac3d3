"""A LoRA that cannot load onto the base model gets one sentence saying why, and no log spew."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dreamstudio.cli import main
from dreamstudio.config import GenerateConfig
from dreamstudio.errors import InputError
from dreamstudio.generate.generator import Generator
from dreamstudio.lora.adapters import (
    TEXT_ENCODER_TARGETS,
    UNET_TARGETS,
    add_lora,
    peft_weights,
)
from dreamstudio.lora.files import WEIGHTS_NAME, lora_state_dicts, save_lora

PROMPT = "a photo of sks dog"


def _save_untrained_lora(unet, text_encoder, folder: Path, model: str) -> Path:
    """A LoRA as training saves it, fresh from initialisation (no training needed here)."""
    add_lora(unet, 4, UNET_TARGETS)
    add_lora(text_encoder, 4, TEXT_ENCODER_TARGETS)
    info = {"config": {"model": model, "instance_prompt": PROMPT}}
    save_lora(folder, *lora_state_dicts(peft_weights(unet, text_encoder)), info)
    return folder


@pytest.fixture(scope="module")
def own_lora(tiny_model, tmp_path_factory) -> Path:
    from dreamstudio.core.tiny_model import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    return _save_untrained_lora(pipe.unet, pipe.text_encoder,
                                tmp_path_factory.mktemp("own-lora"), str(tiny_model))


@pytest.fixture(scope="module")
def other_lora(tmp_path_factory) -> Path:
    """A LoRA of a wider tiny model: other channel counts in the UNet and text encoder,
    as an SD 2.x LoRA is to an SD 1.x base model."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(64, 128), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
        attention_head_dim=4, norm_num_groups=16,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406,
        eos_token_id=49407, pad_token_id=49407,
    ))
    return _save_untrained_lora(unet, text_encoder, tmp_path_factory.mktemp("other-lora"),
                                "wide-tiny-model")


@pytest.fixture(scope="module")
def generator(tiny_model):
    return Generator(str(tiny_model), device="cpu")


def _load(generator, lora_dir: Path) -> None:
    generator.load_for(GenerateConfig(prompt=PROMPT, lora_dir=lora_dir))


def _damaged(own_lora: Path, folder: Path, cut) -> Path:
    shutil.copytree(own_lora, folder)
    weights = folder / WEIGHTS_NAME
    weights.write_bytes(cut(weights.read_bytes()))
    return folder


def test_a_lora_of_another_architecture_names_the_mismatch(generator, other_lora, own_lora,
                                                           capfd):
    with pytest.raises(InputError) as refused:
        _load(generator, other_lora)
    message = str(refused.value)
    assert message.startswith(f"The LoRA in {other_lora} was trained for another model")
    assert "whose UNet layer " in message and "has 64 inputs" in message, message
    assert "it has 32" in message and "it was trained on wide-tiny-model" in message, message
    assert "\n" not in message and len(message) < 500, message
    assert "size mismatch" not in message
    printed = capfd.readouterr()
    assert "size mismatch" not in printed.err + printed.out  # diffusers' log stayed quiet

    # The pipeline is unharmed: its own LoRA loads and draws after the refusal.
    _load(generator, own_lora)
    image = generator.generate(GenerateConfig(prompt=PROMPT, lora_dir=own_lora, steps=1,
                                              height=64, width=64))[0].image
    assert image.size == (64, 64)


@pytest.mark.parametrize("cut", [lambda data: data[: len(data) // 2],
                                 lambda data: b"not a safetensors file at all" * 10],
                         ids=["truncated", "garbage"])
def test_a_damaged_lora_file_is_called_damaged(generator, own_lora, tmp_path, cut):
    folder = _damaged(own_lora, tmp_path / "lora", cut)
    with pytest.raises(InputError) as refused:
        _load(generator, folder)
    message = str(refused.value)
    assert f"The LoRA file {folder / WEIGHTS_NAME} is damaged or not a LoRA" in message
    assert "different base model" not in message and "\n" not in message, message


def test_a_safetensors_file_without_lora_weights_is_not_a_lora(generator, own_lora, tmp_path):
    from safetensors.torch import save_file

    folder = _damaged(own_lora, tmp_path / "lora", lambda data: data)
    save_file({"some.weight": torch.zeros(2, 2)}, folder / WEIGHTS_NAME)
    with pytest.raises(InputError, match="none of its 1 tensors is a LoRA matrix"):
        _load(generator, folder)


def test_the_cli_says_it_in_one_line(tiny_model, other_lora, tmp_path, capfd):
    code = main(["generate", "--model", str(tiny_model), "--lora", str(other_lora),
                 "--prompt", PROMPT, "--output", str(tmp_path / "out"), "--steps", "1",
                 "--device", "cpu"])
    assert code == 2
    lines = [line for line in capfd.readouterr().err.splitlines()
             if line.strip() and "it/s]" not in line and "s/it]" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: The LoRA in"), lines
