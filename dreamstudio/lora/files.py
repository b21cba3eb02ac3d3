"""LoRA adapters: attaching them for training, and writing/reading them safely on disk.

The weights file is the diffusers LoRA format (`pytorch_lora_weights.safetensors` with
`unet.` and `text_encoder.` keys), so `pipeline.load_lora_weights(folder)` loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.files import atomic_path, atomic_write_json

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
CONFIG_NAME = "dreamstudio_lora.json"
ADAPTER_NAME = "subject"
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def add_lora(model, rank: int, targets: list[str]) -> None:
    """Attach a trainable LoRA (alpha = rank, so its scale is 1) to `model` in place."""
    from peft import LoraConfig

    config = LoraConfig(
        r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets
    )
    model.add_adapter(config)


def peft_weights(unet, text_encoder=None) -> dict:
    """LoRA weights keyed `unet.<module path>.lora_A.weight` (and `text_encoder.` ones),
    the module paths being the models' own; used for checkpoints and kohya export."""
    from peft.utils import get_peft_model_state_dict

    weights = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()}
    if text_encoder is not None:
        weights |= {f"text_encoder.{k}": v
                    for k, v in get_peft_model_state_dict(text_encoder).items()}
    return weights


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


def is_lora_dir(path: Path) -> bool:
    return (Path(path) / WEIGHTS_NAME).is_file()
