"""A trained LoRA on disk: its weights file, its record of how it was trained, and reading both.

The weights file is the diffusers LoRA format (`pytorch_lora_weights.safetensors` with
`unet.` and `text_encoder.` keys), so `pipeline.load_lora_weights(folder)` loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.files import atomic_path, atomic_write_json

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
CONFIG_NAME = "dreamstudio_lora.json"


def lora_state_dicts(weights: dict) -> tuple[dict, dict | None]:
    """Diffusers-format LoRA state dicts (UNet, text encoder) from `peft_weights` output."""
    from diffusers.utils import convert_state_dict_to_diffusers

    parts = {}
    for prefix in ("unet.", "text_encoder."):
        part = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        parts[prefix] = convert_state_dict_to_diffusers(part) if part else None
    return parts["unet."], parts["text_encoder."]


def save_lora(output_dir: Path, unet_layers: dict, te_layers: dict | None, info: dict) -> Path:
    """Write the LoRA weights and `info` into `output_dir`, each file atomically.

    A crash or a cancel mid-write leaves any earlier LoRA untouched.
    """
    from diffusers import StableDiffusionPipeline

    target = Path(output_dir) / WEIGHTS_NAME
    with atomic_path(target) as tmp:
        # diffusers writes the file (its key layout and header); the name is ours.
        StableDiffusionPipeline.save_lora_weights(
            save_directory=tmp.parent,
            unet_lora_layers=unet_layers,
            text_encoder_lora_layers=te_layers,
            weight_name=tmp.name,
            safe_serialization=True,
        )
    atomic_write_json(Path(output_dir) / CONFIG_NAME, info)
    return target


def read_lora_info(lora_dir: Path) -> dict:
    """The run's config/summary saved beside the weights ({} if absent or unreadable)."""
    path = Path(lora_dir) / CONFIG_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def lora_weights_path(lora_dir: Path) -> Path:
    return Path(lora_dir) / WEIGHTS_NAME


def is_lora_dir(path: Path) -> bool:
    return (Path(path) / WEIGHTS_NAME).is_file()
