"""Export a LoRA in the kohya format that AUTOMATIC1111, Forge and ComfyUI load.

Kohya names each LoRA module after the diffusers module path with dots turned into
underscores, prefixed `lora_unet_` or `lora_te_`, with `lora_down` (A), `lora_up` (B) and
a scalar `alpha` per module; training settings go into the safetensors header (`ss_*`).
A DoRA adds `dora_scale` per module: peft's magnitude vector, one norm per output row,
shaped (out, 1) as LyCORIS writes a DoRA normalised on the output axis (ComfyUI tells the
axis by that first size; a (1, in) scale would be the input-axis kind).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ..core.files import atomic_path, is_temporary
from ..core.models import describe_source
from .adapters import classic_clip_path
from .files import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    is_lora_dir,
    lora_alpha,
    read_lora_info,
    read_lora_weights,
)

log = logging.getLogger(__name__)

_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
# Keys as peft's get_peft_model_state_dict gives them, prefixed with the component, so the
# module path is exactly the model's own (`model.named_modules()`).
_KEY = re.compile(r"^(unet|text_encoder)\.(.+)\."
                  r"(?:(lora_A|lora_B)\.weight|(lora_magnitude_vector))$")
_KIND = {"lora_A": "lora_down.weight", "lora_B": "lora_up.weight"}


def kohya_module_name(component: str, module_path: str) -> str:
    """`down_blocks.0.attentions.0.proj_in` -> `lora_unet_down_blocks_0_attentions_0_proj_in`."""
    if component == "text_encoder":
        module_path = classic_clip_path(module_path)
    return _PREFIXES[component] + module_path.replace(".", "_")


def to_kohya(peft_state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """Map peft LoRA weights (`unet.<module path>.lora_A.weight`) to kohya keys."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in peft_state.items():
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"unexpected LoRA key {key!r}: cannot map it to the kohya format")
        component, path, which, magnitude = match.groups()
        name = kohya_module_name(component, path)
        tensor = tensor.detach().to("cpu", torch.float32)
        if magnitude:
            out[f"{name}.dora_scale"] = tensor.reshape(-1, 1).contiguous()
        else:
            out[f"{name}.{_KIND[which]}"] = tensor.contiguous()
        out.setdefault(f"{name}.alpha", torch.tensor(float(alpha)))
    return out


# The export sits beside these; on a case-blind disk "Pytorch_Lora_Weights" is the same file.
_TAKEN_STEMS = {Path(WEIGHTS_NAME).stem.casefold(), Path(CONFIG_NAME).stem.casefold()}


def subject_file_name(name: str) -> str:
    """A portable file name for the subject ('Rex the dog' -> 'Rex_the_dog.safetensors'),
    never that of the diffusers weights file beside it (a run named so gets '_kohya')."""
    stem = re.sub(r"[^\w.-]+", "_", name, flags=re.UNICODE).strip("._")[:80] or "subject"
    if stem.casefold() in _TAKEN_STEMS:
        stem += "_kohya"
    return f"{stem}.safetensors"


def kohya_path(lora_dir: Path, info: dict) -> Path:
    """Where the kohya file of the LoRA in `lora_dir` (with record `info`) goes."""
    return Path(lora_dir) / subject_file_name(info.get("subject_name") or Path(lora_dir).name)


def find_kohya_file(lora_dir: Path) -> Path | None:
    """The LoRA's kohya file: the one its record names, else the only other visible
    .safetensors in the folder (a file renamed by hand). Temporaries are never taken."""
    lora_dir = Path(lora_dir)
    named = kohya_path(lora_dir, read_lora_info(lora_dir))
    if named.is_file():
        return named
    others = [p for p in lora_dir.glob("*.safetensors")
              if p.name != WEIGHTS_NAME and not p.name.startswith(".") and not is_temporary(p)]
    return others[0] if len(others) == 1 else None


def shared_model_name(model: str | None) -> str | None:
    """The base model as a shared file may name it: a Hub id as it is, a local folder or
    file by its own name only, since its full path tells others about the user's disk."""
    if not model or describe_source(model) == "hub":
        return model
    return Path(model).expanduser().name or model


def tag_frequency(info: dict) -> dict[str, int]:
    """The prompts trained on: the instance prompt, then each caption's prompt with how
    many photos trained on it (kohya counts its caption tags so)."""
    counts = {info.get("config", {}).get("instance_prompt", ""): 1}
    for prompt in (info.get("captions") or {}).values():
        counts[prompt] = counts.get(prompt, 0) + 1
    return counts


def _face_weighted(cfg: dict) -> bool:
    return (cfg.get("face_loss_weight", 1.0), cfg.get("face_outside_weight", 1.0)) != (1.0, 1.0)


def kohya_metadata(info: dict) -> dict[str, str]:
    """safetensors header metadata (strings only) in kohya's `ss_` vocabulary plus ours."""
    cfg = info.get("config", {})
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": cfg.get("rank"),
        "ss_network_alpha": lora_alpha(cfg) if cfg.get("rank") else None,
        # LyCORIS's way of saying a LoRA is a DoRA (its `dora_wd`); ours says it plainly.
        "ss_network_args": json.dumps({"algo": "lora", "dora_wd": True})
        if cfg.get("use_dora") else None,
        "dreamstudio_dora": bool(cfg.get("use_dora")),
        "dreamstudio_optimizer": cfg.get("optimizer"),
        "ss_sd_model_name": shared_model_name(cfg.get("model")),
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
        "ss_tag_frequency": json.dumps({"instance": tag_frequency(info)}),
        "dreamstudio_identifier": info.get("identifier"),
        "dreamstudio_instance_prompt": cfg.get("instance_prompt"),
        "dreamstudio_class_prompt": cfg.get("class_prompt") or "",
        "dreamstudio_prior_loss_weight": cfg.get("prior_loss_weight")
        if cfg.get("class_prompt") else "",
        "dreamstudio_use_captions": cfg.get("use_captions"),
        "dreamstudio_date": info.get("finished_at") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dreamstudio_pivotal": bool(cfg.get("pivotal")),
        # Loss-side methods (absent: off, as kohya leaves out what was not used).
        "dreamstudio_prior_mode": cfg.get("prior_mode") if cfg.get("class_prompt") else None,
        "ss_min_snr_gamma": cfg.get("min_snr_gamma"),
        "ss_noise_offset": cfg.get("noise_offset") or None,
        "dreamstudio_face_loss_weight": cfg.get("face_loss_weight")
        if _face_weighted(cfg) else None,
        "dreamstudio_face_outside_weight": cfg.get("face_outside_weight")
        if _face_weighted(cfg) else None,
    }
    pivotal = info.get("pivotal")
    if cfg.get("pivotal") and isinstance(pivotal, dict):
        # The embedding is a file of its own: A1111 / ComfyUI read it from their embeddings
        # folder, and the prompt then names it (a1111_file's name, i.e. the identifier).
        meta |= {"dreamstudio_pivotal_tokens": pivotal.get("vectors"),
                 "dreamstudio_pivotal_token": pivotal.get("token"),
                 "dreamstudio_pivotal_embedding": pivotal.get("a1111_file"),
                 "dreamstudio_pivotal_lr": cfg.get("pivotal_lr"),
                 "dreamstudio_pivotal_stop": cfg.get("pivotal_stop")}
    return {k: str(v) for k, v in meta.items() if v is not None}


def export_kohya(peft_state: dict[str, torch.Tensor], alpha: float, path: Path,
                 info: dict) -> Path:
    """Write the kohya-format file atomically; return its path."""
    tensors = to_kohya(peft_state, alpha)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=kohya_metadata(info))
    return path


def finish_export(lora_dir: Path) -> Path | None:
    """The kohya file of the finished LoRA in `lora_dir`, written now from its weights when
    a kill or crash during the export left it missing. None when the run exports none (or
    is not finished), or when its weights cannot be read (loading the LoRA says why)."""
    info = read_lora_info(lora_dir)
    cfg = info.get("config") or {}
    if not info or not is_lora_dir(lora_dir) or not cfg.get("export_kohya", True):
        return None
    path = kohya_path(lora_dir, info)
    if path.is_file():
        return path
    try:
        weights = read_lora_weights(lora_dir)
    except (OSError, ValueError, SafetensorError) as exc:
        # A damaged file: loading the LoRA reports it, in its own words.
        log.warning("cannot finish the kohya export of %s: %s", lora_dir, exc)
        return None
    if not weights:
        return None
    # Runs without an alpha setting trained with alpha = rank: the down weights' first size.
    alpha = lora_alpha(cfg) if cfg.get("rank") else next(
        v.shape[0] for k, v in weights.items() if k.endswith(".lora_A.weight"))
    log.info("finishing the missing kohya export of %s", lora_dir)
    try:
        return export_kohya(weights, alpha, path, info)
    except OSError as exc:  # e.g. a read-only folder: the LoRA itself still loads
        log.warning("cannot finish the kohya export of %s: %s", lora_dir, exc)
        return None
