"""Export a LoRA in the kohya format that AUTOMATIC1111, Forge and ComfyUI load.

Kohya names each LoRA module after the diffusers module path with dots turned into
underscores, prefixed `lora_unet_` or `lora_te_`, with `lora_down` (A), `lora_up` (B) and
a scalar `alpha` per module; training settings go into the safetensors header (`ss_*`).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..core.files import atomic_path

_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
# Keys as peft's get_peft_model_state_dict gives them, prefixed with the component, so the
# module path is exactly the model's own (`model.named_modules()`).
_KEY = re.compile(r"^(unet|text_encoder)\.(.+)\.(lora_A|lora_B)\.weight$")
_KIND = {"lora_A": "lora_down", "lora_B": "lora_up"}


def kohya_module_name(component: str, module_path: str) -> str:
    """`down_blocks.0.attentions.0.proj_in` -> `lora_unet_down_blocks_0_attentions_0_proj_in`."""
    if component == "text_encoder" and not module_path.startswith("text_model."):
        # transformers 5 dropped CLIPTextModel's `text_model` wrapper; the tools that read
        # kohya files expect the classic CLIP path `text_model.encoder.layers.N...`.
        module_path = "text_model." + module_path
    return _PREFIXES[component] + module_path.replace(".", "_")


def to_kohya(peft_state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """Map peft LoRA weights (`unet.<module path>.lora_A.weight`) to kohya keys."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in peft_state.items():
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"unexpected LoRA key {key!r}: cannot map it to the kohya format")
        component, path, which = match.groups()
        name = kohya_module_name(component, path)
        out[f"{name}.{_KIND[which]}.weight"] = (
            tensor.detach().to("cpu", torch.float32).contiguous()
        )
        out.setdefault(f"{name}.alpha", torch.tensor(float(alpha)))
    return out


def subject_file_name(name: str) -> str:
    """A portable file name for the subject ('Rex the dog' -> 'Rex_the_dog.safetensors')."""
    stem = re.sub(r"[^\w.-]+", "_", name, flags=re.UNICODE).strip("._") or "subject"
    return f"{stem[:80]}.safetensors"


def kohya_metadata(info: dict) -> dict[str, str]:
    """safetensors header metadata (strings only) in kohya's `ss_` vocabulary plus ours."""
    cfg = info.get("config", {})
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": cfg.get("rank"),
        "ss_network_alpha": cfg.get("rank"),
        "ss_sd_model_name": cfg.get("model"),
        "ss_base_model_version": info.get("base_model_version", "sd_v1"),
        "ss_v2": info.get("prediction_type") == "v_prediction",
        "ss_max_train_steps": info.get("steps_done"),
        "ss_learning_rate": cfg.get("learning_rate"),
        "ss_unet_lr": cfg.get("learning_rate"),
        "ss_text_encoder_lr": cfg.get("text_encoder_lr") if cfg.get("train_text_encoder") else 0,
        "ss_resolution": f"({cfg.get('resolution')}, {cfg.get('resolution')})",
        "ss_seed": cfg.get("seed"),
        "ss_training_finished_at": info.get("finished_at"),
        "ss_output_name": info.get("subject_name"),
        "ss_tag_frequency": json.dumps({"instance": {cfg.get("instance_prompt", ""): 1}}),
        "dreamstudio_identifier": info.get("identifier"),
        "dreamstudio_instance_prompt": cfg.get("instance_prompt"),
        "dreamstudio_class_prompt": cfg.get("class_prompt") or "",
        "dreamstudio_prior_loss_weight": cfg.get("prior_loss_weight")
        if cfg.get("class_prompt") else "",
        "dreamstudio_date": info.get("finished_at") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return {k: str(v) for k, v in meta.items() if v is not None}


def export_kohya(peft_state: dict[str, torch.Tensor], alpha: float, path: Path,
                 info: dict) -> Path:
    """Write the kohya-format file atomically; return its path."""
    tensors = to_kohya(peft_state, alpha)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=kohya_metadata(info))
    return path
