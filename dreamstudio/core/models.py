"""Loading a base Stable Diffusion model from a Hub id, a diffusers folder or one file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .architectures import ARCHITECTURES, single_file_sources, uses_shipped_config

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def describe_source(model: str) -> str:
    """Say which of the three kinds of model reference `model` is: folder, file or hub."""
    path = Path(model).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    if _HUB_ID.match(model) and not model.endswith(SINGLE_FILE_SUFFIXES):
        # "models/sd15" where ./models exists is a mistyped local path, not a Hub id.
        if Path(model.split("/")[0]).is_dir():
            return "missing"
        return "hub"
    return "missing"


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _network_hint(exc: BaseException) -> str | None:
    text = f"{type(exc).__name__}: {exc}".lower()
    markers = ("connect", "offline", "resolve", "network", "timed out", "not fully cached",
               "cannot find an appropriate cached")
    if _hub_offline() or any(m in text for m in markers):
        return (
            "it is not in the local Hugging Face cache and there is no network access to "
            "the Hub (or HF_HUB_OFFLINE is set). Download it once with network access, or "
            "pass a local diffusers folder or a .safetensors file. (A single-file checkpoint "
            "needs no --model-config for SD 1.x, 2.x and SDXL: leave it out, or name one of "
            f"{', '.join(ARCHITECTURES)}.)"
        )
    return None


def _check_checkpoint_file(path: Path) -> None:
    """Catch a corrupt or truncated .safetensors before diffusers reports something vaguer."""
    if path.suffix.lower() != ".safetensors":
        return
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            if not list(fh.keys()):
                raise ModelLoadError(f"Checkpoint {path} contains no tensors.")
    except ModelLoadError:
        raise
    except Exception as exc:  # any parse failure means the same to the user
        raise ModelLoadError(
            f"Checkpoint {path} is not a readable .safetensors file ({exc}). It may be "
            "truncated or corrupt: download it again."
        ) from exc


def load_vae(vae: str, device: torch.device, dtype: torch.dtype):
    """A VAE the user names (`--vae`): a diffusers VAE folder, a Hub id, or one file."""
    from diffusers import AutoencoderKL

    kind = describe_source(vae)
    path = Path(vae).expanduser()
    try:
        if kind == "file":
            return AutoencoderKL.from_single_file(str(path), dtype=dtype).to(device)
        if kind in ("folder", "hub"):
            source = str(path) if kind == "folder" else vae
            return AutoencoderKL.from_pretrained(source, dtype=dtype).to(device)
    except Exception as exc:  # diffusers/hf raise many types; the user needs one message
        hint = _network_hint(exc) if kind == "hub" else None
        raise ModelLoadError(f"Could not load the VAE '{vae}': "
                             + (hint or f"{type(exc).__name__}: {exc}")) from exc
    raise ModelLoadError(f"VAE '{vae}' not found: it is not an existing folder or file, nor a "
                         "Hugging Face Hub id of the form owner/name.")


def load_pipeline(
    model: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    config_dir: str | None = None,
    vae: str | None = None,
):
    """Load the text-to-image pipeline of `model` (SD 1.x, 2.x or SDXL) onto `device` in
    `dtype`.

    `config_dir` is only used for single-file checkpoints: a diffusers folder (or Hub id)
    whose configs describe the checkpoint's architecture, or the name of a shipped one
    (ARCHITECTURES); without it the shipped one the checkpoint's tensors say is used.
    `vae` replaces the model's own VAE (e.g. an fp16-safe SDXL VAE).
    """
    from .families import is_sdxl, pipeline_class, source_family

    kind = describe_source(model)
    path = Path(model).expanduser()
    if kind == "file":  # said before its tensors are read for the family
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ModelLoadError(
                f"Model file {path} is not a .safetensors or .ckpt checkpoint."
            )
        _check_checkpoint_file(path)
    family = source_family(model, config_dir) if kind != "missing" else None
    StableDiffusionPipeline = pipeline_class(family)
    # SDXL has no safety checker; its invisible watermark is off, as for SD 1.x's checker.
    extra = ({"add_watermarker": False} if is_sdxl(family) else
             {"safety_checker": None, "requires_safety_checker": False})
    if vae is not None:
        extra["vae"] = load_vae(vae, device, dtype)
    try:
        if kind == "folder":
            if not (path / "model_index.json").is_file():
                raise ModelLoadError(
                    f"Model folder {path} has no model_index.json: it is not a diffusers "
                    "pipeline folder. Point to the folder that contains model_index.json, "
                    "unet/, vae/ and text_encoder/, or to a single .safetensors checkpoint."
                )
            pipe = StableDiffusionPipeline.from_pretrained(
                str(path), dtype=dtype, **extra)
        elif kind == "file":
            config, components = single_file_sources(path, config_dir)
            pipe = StableDiffusionPipeline.from_single_file(
                str(path), dtype=dtype, config=config, **components,
                **{k: v for k, v in extra.items() if k != "requires_safety_checker"})
        elif kind == "hub":
            pipe = StableDiffusionPipeline.from_pretrained(
                model, dtype=dtype, **extra)
        else:
            raise ModelLoadError(
                f"Base model '{model}' not found: it is not an existing folder, not an existing "
                "file, and not a Hugging Face Hub id of the form owner/name."
            )
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers/hf raise many types; the user needs one message
        tried = {
            "folder": f"the local diffusers folder {path}",
            "file": f"the single-file checkpoint {path}",
            "hub": f"the Hugging Face Hub id '{model}'",
        }[kind]
        # A checkpoint with a local or shipped config never touches the Hub.
        from_hub = kind == "hub" or (kind == "file" and not uses_shipped_config(config_dir)
                                     and not Path(config_dir).expanduser().is_dir())
        hint = _network_hint(exc) if from_hub else None
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelLoadError(
            f"Could not load the base model from {tried}: "
            + (hint or f"{type(exc).__name__}: {detail}")
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    # SDXL's own VAE overflows to NaN in fp16: its config's force_upcast makes the pipeline
    # decode in fp32 (bf16 has fp32's range and is safe); an fp16-safe `vae` turns that off.
    return pipe.to(device)


# What the training loss knows how to target: noise (SD 1.x, SD 2.x 512) or velocity
# (SD 2.x 768). A model that predicts the clean sample would be trained against noise.
TRAINABLE_PREDICTIONS = ("epsilon", "v_prediction")


def prediction_type(scheduler, model: str | None = None) -> str:
    """What the model predicts, as its scheduler says; training must match it, so a kind
    the training loss has no target for is refused, naming the model."""
    kind = getattr(scheduler.config, "prediction_type", "epsilon") or "epsilon"
    if kind not in TRAINABLE_PREDICTIONS:
        raise ModelLoadError(
            f"Base model '{model or 'this model'}' predicts '{kind}' (prediction_type in its "
            f"scheduler config), which DreamStudio cannot train: only {TRAINABLE_PREDICTIONS} "
            "models (SD 1.x, SD 2.x, SDXL) are supported. Pick another base model."
        )
    return kind
