"""Which family of Stable Diffusion a base model is: SD 1.x, SD 2.x or SDXL.

The family decides the pipeline class, the text encoders (one, or SDXL's two with a pooled
embedding and size/crop conditioning), the LoRA file's components and the defaults a run
starts from. It is read from what is on disk before anything loads: a folder's
`model_index.json`, a single file's tensor names, or (for a Hub id, which cannot be read
offline) the id itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

SD1, SD2, SDXL = "sd1", "sd2", "sdxl"
FAMILY_NAMES = {SD1: "SD 1.x", SD2: "SD 2.x", SDXL: "SDXL"}
# Hub ids of SDXL's architecture say so in their name (stabilityai/stable-diffusion-xl-base-1.0,
# RunDiffusion/Juggernaut-XL-v9, SG161222/RealVisXL_V4.0, ...): "xl" ending a word.
_XL_ID = re.compile(r"xl(?:[^a-z]|$)", re.IGNORECASE)
_SD2_ID = re.compile(r"stable-diffusion-2|sd-?2", re.IGNORECASE)


def is_sdxl(family: str | None) -> bool:
    return family == SDXL


def pipeline_family(pipe) -> str:
    """The family of a loaded pipeline: SDXL has a second text encoder."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return SDXL
    width = getattr(pipe.unet.config, "cross_attention_dim", 768)
    return SD2 if width == 1024 else SD1


def folder_family(path: Path) -> str:
    """The family of a diffusers folder, from its model_index.json (and text encoder)."""
    index = json.loads((Path(path) / "model_index.json").read_text(encoding="utf-8"))
    if "XL" in str(index.get("_class_name", "")) or "text_encoder_2" in index:
        return SDXL
    try:
        te = json.loads((Path(path) / "text_encoder" / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return SD1
    return SD2 if te.get("hidden_size") == 1024 else SD1


def hub_family(model_id: str) -> str:
    """The family a Hub id names; an id that names none is taken for SD 1.x."""
    name = model_id.split("/")[-1]
    if _XL_ID.search(name):
        return SDXL
    return SD2 if _SD2_ID.search(name) else SD1


def source_family(model: str, config_dir: str | None = None) -> str:
    """The family of a base model reference (folder, single file or Hub id), read without
    loading it. A single file's family comes from its tensor names (its header only)."""
    from .architectures import detect_architecture
    from .models import describe_source

    kind = describe_source(model)
    path = Path(model).expanduser()
    if kind == "folder" and (path / "model_index.json").is_file():
        return folder_family(path)
    if kind == "file":
        if config_dir and Path(config_dir).expanduser().is_dir():
            return folder_family(Path(config_dir).expanduser())
        architecture = detect_architecture(path, None)
        return SDXL if architecture == SDXL else (SD1 if architecture == SD1 else SD2)
    if kind == "hub":
        return hub_family(model)
    return SD1


def pipeline_class(family: str):
    """The diffusers text-to-image pipeline class of `family`."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if is_sdxl(family) else StableDiffusionPipeline
