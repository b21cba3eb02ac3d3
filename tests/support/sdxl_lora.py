"""A LoRA for the tiny SDXL model, made without training: its matrices are seeded noise.

The trainer's SDXL support is tested on its own; generation, evaluation and tuning only need
a real SDXL LoRA file (UNet and both text encoders) that moves the image, written by
diffusers' SDXL writer with our record beside it.
"""

from __future__ import annotations

from pathlib import Path

import torch

LORA_RANK = 4


def _noisy_lora_layers(model, generator: torch.Generator, strength: float) -> dict:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: a LoRA that changes nothing
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * strength)
    return convert_state_dict_to_diffusers(get_peft_model_state_dict(model))


def save_sdxl_lora(model_dir: Path, folder: Path, seed: int = 0, strength: float = 0.3,
                   record: dict | None = None) -> Path:
    """Write a LoRA of the tiny SDXL model in `model_dir` into `folder` and return it.
    `record` replaces the dreamstudio_lora.json record (None: rank and family "sdxl")."""
    from diffusers import StableDiffusionXLPipeline

    from dreamstudio.core.files import atomic_write_json
    from dreamstudio.core.models import load_pipeline
    from dreamstudio.lora.adapters import TEXT_ENCODER_TARGETS, UNET_TARGETS, add_lora
    from dreamstudio.lora.files import CONFIG_NAME, WEIGHTS_NAME

    pipe = load_pipeline(str(model_dir), torch.device("cpu"))
    add_lora(pipe.unet, LORA_RANK, UNET_TARGETS)
    add_lora(pipe.text_encoder, LORA_RANK, TEXT_ENCODER_TARGETS)
    add_lora(pipe.text_encoder_2, LORA_RANK, TEXT_ENCODER_TARGETS)
    generator = torch.Generator().manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(
        folder,
        unet_lora_layers=_noisy_lora_layers(pipe.unet, generator, strength),
        text_encoder_lora_layers=_noisy_lora_layers(pipe.text_encoder, generator, strength),
        text_encoder_2_lora_layers=_noisy_lora_layers(pipe.text_encoder_2, generator, strength),
        weight_name=WEIGHTS_NAME,
    )
    info = {"config": {"rank": LORA_RANK}, "family": "sdxl"} if record is None else record
    atomic_write_json(folder / CONFIG_NAME, info)
    return folder
