"""Export a LoRA in the kohya format that AUTOMATIC1111, Forge and ComfyUI load.

Kohya names each LoRA module after the diffusers module path with dots turned into
underscores, prefixed `lora_unet_` or `lora_te_`, with `lora_down` (A), `lora_up` (B) and
a scalar `alpha` per module; training settings go into the safetensors header (`ss_*`).
An SDXL LoRA's text encoders are `lora_te1_` (CLIP ViT-L) and `lora_te2_` (OpenCLIP bigG),
both with the classic `text_model_` level. Its UNet keeps the diffusers module path
(`lora_unet_down_blocks_1_attentions_0_...`), which ComfyUI, A1111 / Forge and diffusers
map onto their UNets (kohya's own SDXL trainer writes the original `input_blocks_4_1_...`
names instead; both load). The header tells SDXL as kohya does (`ss_base_model_version`
"sdxl_base_v1-0", which A1111 / Forge read) and in the SAI model spec
(`modelspec.architecture`, read by SwarmUI and model sites).
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

from ..core.families import SD2, SDXL, is_sdxl
from ..core.files import atomic_path, is_temporary
from ..core.models import describe_source
from .adapters import TEXT_ENCODERS, classic_clip_path
from .files import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    is_lora_dir,
    lora_alpha,
    read_lora_info,
    read_lora_weights,
    weights_family,
)

log = logging.getLogger(__name__)

_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
# SDXL's two text encoders, as kohya's SDXL trainer names them (and ComfyUI, A1111 and
# diffusers' converter read them).
_SDXL_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te1_",
                  "text_encoder_2": "lora_te2_"}
# Keys as peft's get_peft_model_state_dict gives them, prefixed with the component, so the
# module path is exactly the model's own (`model.named_modules()`).
_KEY = re.compile(r"^(unet|text_encoder_2|text_encoder)\.(.+)\."
                  r"(?:(lora_A|lora_B)\.weight|(lora_magnitude_vector))$")
_KIND = {"lora_A": "lora_down.weight", "lora_B": "lora_up.weight"}


def kohya_module_name(component: str, module_path: str, sdxl: bool = False) -> str:
    """`down_blocks.0.attentions.0.proj_in` -> `lora_unet_down_blocks_0_attentions_0_proj_in`;
    on SDXL (`sdxl`, always for text_encoder_2) the text encoders are `lora_te1_` / `lora_te2_`."""
    if component in TEXT_ENCODERS:
        module_path = classic_clip_path(module_path)
    prefixes = _SDXL_PREFIXES if sdxl or component == "text_encoder_2" else _PREFIXES
    return prefixes[component] + module_path.replace(".", "_")


def to_kohya(peft_state: dict[str, torch.Tensor], alpha: float,
             family: str | None = None) -> dict[str, torch.Tensor]:
    """Map peft LoRA weights (`unet.<module path>.lora_A.weight`) to kohya keys; `family`
    (None: SDXL if the weights adapt text_encoder_2) decides the text encoders' prefixes."""
    sdxl = is_sdxl(family or weights_family(peft_state))
    out: dict[str, torch.Tensor] = {}
    for key, tensor in peft_state.items():
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"unexpected LoRA key {key!r}: cannot map it to the kohya format")
        component, path, which, magnitude = match.groups()
        name = kohya_module_name(component, path, sdxl)
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


# kohya's `ss_base_model_version` per family; A1111 / Forge take a LoRA for SDXL when it
# starts with "sdxl_". SD 1.x / 2.x LoRAs keep "sd_v1" (and `ss_v2`) as before.
_BASE_MODEL_VERSION = {SDXL: "sdxl_base_v1-0", SD2: "sd_v2"}


def base_model_version(info: dict) -> str:
    return _BASE_MODEL_VERSION.get(info.get("family"),
                                   info.get("base_model_version", "sd_v1"))


def _is_v2(info: dict) -> bool:
    return info.get("family") == SD2 or info.get("prediction_type") == "v_prediction"


def modelspec(info: dict) -> dict:
    """The SAI model spec's required fields (https://github.com/Stability-AI/ModelSpec), as
    kohya writes them: the architecture says the base model family and that this is a LoRA."""
    cfg = info.get("config", {})
    v_pred = info.get("prediction_type") == "v_prediction"
    if is_sdxl(info.get("family")):
        architecture = "stable-diffusion-xl-v1-base"
    elif _is_v2(info):
        architecture = "stable-diffusion-v2-768-v" if v_pred else "stable-diffusion-v2-512"
    else:
        architecture = "stable-diffusion-v1"
    side = cfg.get("resolution")
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{architecture}/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models"
        if is_sdxl(info.get("family")) else "diffusers",
        "modelspec.title": info.get("subject_name"),
        "modelspec.resolution": f"{side}x{side}" if side else None,
        "modelspec.prediction_type": "v" if v_pred else "epsilon",
    }


def kohya_metadata(info: dict) -> dict[str, str]:
    """safetensors header metadata (strings only) in kohya's `ss_` vocabulary, the model
    spec's, and ours."""
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
        "ss_base_model_version": base_model_version(info),
        "ss_v2": _is_v2(info),
        "dreamstudio_family": info.get("family"),
        "ss_max_train_steps": info.get("steps_done"),
        "ss_learning_rate": cfg.get("learning_rate"),
        "ss_unet_lr": cfg.get("learning_rate"),
        "ss_text_encoder_lr": cfg.get("text_encoder_lr") if cfg.get("train_text_encoder") else 0,
        # SDXL's second text encoder, when its rate was set apart from the first's.
        "dreamstudio_text_encoder_2_lr": cfg.get("text_encoder_2_lr")
        if cfg.get("train_text_encoder") else None,
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
        **modelspec(info),
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
    tensors = to_kohya(peft_state, alpha, info.get("family"))
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
