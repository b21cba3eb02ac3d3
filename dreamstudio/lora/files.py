"""A trained LoRA on disk: its weights file, its record of how it was trained, and reading both.

The weights file is the diffusers LoRA format (`pytorch_lora_weights.safetensors` with
`unet.` and `text_encoder.text_model.` keys), so `pipeline.load_lora_weights(folder)` loads
it on transformers 4 and 5 stacks alike. Files written before the text encoder's keys got
their `text_model.` level (`text_encoder.encoder...`) still load with our pinned stack, and
`read_lora_weights` reads both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..core.files import atomic_path, atomic_write_json
from .adapters import TEXT_ENCODER_TARGETS, UNET_TARGETS, adapter_settings, classic_clip_path

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
CONFIG_NAME = "dreamstudio_lora.json"
# A key of the weights file: diffusers' `<path>.lora.down.weight` (UNet),
# `<path>.lora_linear_layer.down.weight` (text encoder), or peft's `<path>.lora_A.weight`;
# a DoRA's `<path>.lora_magnitude_vector` (`.weight` on text-encoder keys).
_FILE_KEY = re.compile(r"^(unet|text_encoder_2|text_encoder)\.(.+?)\.(?:"
                       r"(?:(?:lora|lora_linear_layer)\.(down|up)|(lora_A|lora_B))\.weight"
                       r"|(lora_magnitude_vector)(?:\.weight)?)$")
_PEFT_NAME = {"down": "lora_A.weight", "up": "lora_B.weight"}
MAGNITUDE = "lora_magnitude_vector"


def lora_alpha(config: dict) -> int:
    """A run's LoRA alpha from its saved settings: runs without the setting used the rank."""
    return config.get("lora_alpha") or config.get("rank") or 4


def lora_state_dicts(weights: dict) -> tuple[dict, dict | None, dict | None]:
    """Diffusers-format LoRA state dicts (UNet, text encoder, text encoder 2) from
    `peft_weights` output."""
    from diffusers.utils import convert_state_dict_to_diffusers

    parts = {}
    for prefix in ("unet.", "text_encoder.", "text_encoder_2."):
        part = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        if prefix != "unet.":
            # diffusers 0.35 with transformers 4 cannot place `encoder.layers...` keys (it
            # fails with an IndexError), and ComfyUI ignores them: write the classic path.
            part = {classic_clip_path(k): v for k, v in part.items()}
        part = convert_state_dict_to_diffusers(part) if part else None
        if part and prefix != "unet.":
            # diffusers 0.42 hands text-encoder keys to transformers' load_adapter, which
            # finds a DoRA magnitude only under `...lora_magnitude_vector.weight`.
            part = {(k + ".weight" if k.endswith(MAGNITUDE) else k): v for k, v in part.items()}
        parts[prefix] = part
    return parts["unet."], parts["text_encoder."], parts["text_encoder_2."]


def read_lora_weights(lora_dir: Path) -> dict:
    """The weights file read back as `peft_weights` gives them (`unet.<path>.lora_A.weight`),
    whichever text-encoder layout it has; ValueError if a key is not one of a LoRA."""
    from safetensors.torch import load_file

    weights = {}
    for key, tensor in load_file(str(lora_weights_path(lora_dir))).items():
        match = _FILE_KEY.match(key)
        if match is None:
            raise ValueError(f"{lora_weights_path(lora_dir)} has a key that is not a LoRA "
                             f"weight ({key!r}): it is not a DreamStudio LoRA file")
        component, path, diffusers_name, peft_name, magnitude = match.groups()
        name = magnitude or (f"{peft_name}.weight" if peft_name else _PEFT_NAME[diffusers_name])
        weights[f"{component}.{path}.{name}"] = tensor
    return weights


def save_lora(output_dir: Path, unet_layers: dict, te_layers: dict | None,
              te2_layers: dict | None, info: dict) -> Path:
    """Write the LoRA weights and `info` into `output_dir`, each file atomically.

    A crash or a cancel mid-write leaves any earlier LoRA untouched. The file's header
    records the adapter's rank, alpha and DoRA (from `info["config"]`), from which diffusers
    rebuilds it: the same output as the trained model whatever the alpha.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cfg = info.get("config") or {}
    rank = cfg.get("rank") or next(
        (v.shape[0] for k, v in (unet_layers or {}).items() if k.endswith(".down.weight")), 4)
    settings = {"rank": rank, "alpha": cfg.get("lora_alpha") or rank,
                "use_dora": any(MAGNITUDE in k for k in unet_layers or {})}

    target = Path(output_dir) / WEIGHTS_NAME
    with atomic_path(target) as tmp:
        # diffusers writes the file (its key layout and header); the name is ours.
        # A second text encoder's layers need SDXL's writer (its keys `text_encoder_2.`).
        second = {"text_encoder_2_lora_layers": te2_layers,
                  "text_encoder_2_lora_adapter_metadata": adapter_settings(
                      targets=TEXT_ENCODER_TARGETS, **settings)} if te2_layers else {}
        writer = StableDiffusionXLPipeline if te2_layers else StableDiffusionPipeline
        writer.save_lora_weights(
            save_directory=tmp.parent,
            unet_lora_layers=unet_layers,
            text_encoder_lora_layers=te_layers,
            weight_name=tmp.name,
            safe_serialization=True,
            # The UNet's adapted layers by path, as diffusers finds them without a header;
            # the text encoder's by name, since its paths differ between transformers 4 and 5.
            unet_lora_adapter_metadata=adapter_settings(
                targets=sorted({k.split(".lora")[0] for k in unet_layers or {}}) or UNET_TARGETS,
                **settings),
            text_encoder_lora_adapter_metadata=adapter_settings(
                targets=TEXT_ENCODER_TARGETS, **settings) if te_layers else None,
            **second,
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
