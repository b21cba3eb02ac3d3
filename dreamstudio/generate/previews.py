"""Pictures of an image while it is denoised, cheap enough to show every few steps.

The full VAE decode costs about as much as several sampler steps, so previews come from
the latents directly: by default a linear map of the four latent channels to RGB (SD 1.x
and 2.x share one VAE, so one map serves both; SDXL's VAE has its own latent statistics and
its own map), or, when the user has one on disk, a small preview decoder such as TAESD
(diffusers' AutoencoderTiny; TAESDXL for SDXL). Neither touches the latents:
a preview never changes the finished image.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.families import is_sdxl, pipeline_family
from ..errors import InputError

# Sampler latents (already times the VAE's scaling factor 0.18215) -> RGB in [-1, 1], one
# row per latent channel. These are the least-squares fit of SD 1.x VAE decodes that keturn
# published in 2022 and most SD front ends use; `fit_latent_rgb` refits it from any VAE's
# decodes, should a better one be wanted.
LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
LATENT_RGB_BIAS = (0.0, 0.0, 0.0)
# The same kind of fit for SDXL's VAE (its latents times 0.13025), with a bias, as
# ComfyUI publishes it for its SDXL previews (comfy/latent_formats.py, 2023).
LATENT_RGB_SDXL = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
LATENT_RGB_SDXL_BIAS = (0.1084, -0.0175, -0.0011)
DECODER_CLASS = "AutoencoderTiny"

Picture = Callable[[torch.Tensor], list[Image.Image]]  # latents -> one picture per image
# What the caller of a generation gets: (one picture per image, steps done, steps in all).
PreviewFn = Callable[[list[Image.Image], int, int], None]


def is_preview_step(done: int, every: int, total: int) -> bool:
    """Whether step `done` (1-based) of `total` gets a preview: every `every` steps, none
    when `every` is 0, and none at the end, where the finished image follows at once."""
    return every > 0 and done < total and done % every == 0


def approximate_rgb(latents: torch.Tensor, matrix=LATENT_RGB, bias=LATENT_RGB_BIAS
                    ) -> torch.Tensor:
    """(B, 4, h, w) latents -> (B, 3, h, w) RGB in [0, 1] by the linear map."""
    m = torch.tensor(matrix, dtype=torch.float32, device=latents.device)
    b = torch.tensor(bias, dtype=torch.float32, device=latents.device)
    rgb = torch.einsum("bchw,cr->brhw", latents.float(), m) + b[None, :, None, None]
    return ((rgb + 1) / 2).clamp(0, 1)


def latent_rgb_map(family: str) -> tuple[tuple, tuple]:
    """The (matrix, bias) of the colour map for the latents of a model of `family`."""
    if is_sdxl(family):
        return LATENT_RGB_SDXL, LATENT_RGB_SDXL_BIAS
    return LATENT_RGB, LATENT_RGB_BIAS


def fit_latent_rgb(latents: torch.Tensor, images: torch.Tensor
                   ) -> tuple[list[list[float]], list[float]]:
    """The matrix and bias that best map `latents` (B, C, h, w) to `images` (B, 3, h, w,
    in [-1, 1], e.g. VAE decodes shrunk to the latent size), by least squares."""
    x = latents.float().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    y = images.float().permute(0, 2, 3, 1).reshape(-1, 3)
    x = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    solution = torch.linalg.lstsq(x, y).solution
    return solution[:-1].tolist(), solution[-1].tolist()


def to_images(rgb: torch.Tensor, size: tuple[int, int]) -> list[Image.Image]:
    """(B, 3, h, w) RGB in [0, 1] -> PIL images of `size` (width, height), bilinear."""
    pixels = (rgb.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).numpy()
    images = [Image.fromarray(np.ascontiguousarray(p)) for p in pixels]
    return [im if im.size == size else im.resize(size, Image.Resampling.BILINEAR) for im in images]


# ---- an optional preview decoder on disk (TAESD) ---------------------------------------------
_decoders: dict[Path, torch.nn.Module] = {}
_decoders_lock = threading.Lock()


def check_decoder_folder(folder: Path) -> None:
    """Refuse, with what to do, a folder that is not a diffusers AutoencoderTiny."""
    hint = ("give the folder of a diffusers AutoencoderTiny (e.g. madebyollin/taesd, "
            "downloaded), or leave the setting empty for the built-in approximation.")
    if not folder.is_dir():
        raise InputError(f"Preview decoder {folder} is not a folder: {hint}")
    config = folder / "config.json"
    try:
        name = json.loads(config.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        raise InputError(f"Preview decoder {folder} has no readable config.json: "
                         f"{hint}") from None
    if name != DECODER_CLASS:
        raise InputError(f"Preview decoder {folder}: its config.json names "
                         f"{name or 'no model class'}, not {DECODER_CLASS}: {hint}")


def load_decoder(folder: Path) -> torch.nn.Module:
    """The AutoencoderTiny in `folder`, loaded once per folder (fp32, CPU until used)."""
    from diffusers import AutoencoderTiny

    folder = Path(folder).expanduser().resolve()
    with _decoders_lock:
        if folder not in _decoders:
            check_decoder_folder(folder)
            try:
                decoder = AutoencoderTiny.from_pretrained(str(folder))
            except Exception as exc:  # damaged or missing weights: the user can fix the folder
                raise InputError(f"Preview decoder {folder} could not be loaded "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}): "
                                 "check that its weights are complete.") from exc
            _decoders[folder] = decoder.eval().requires_grad_(False)
        return _decoders[folder]


def decoded_rgb(decoder: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] from a tiny decoder, which takes the sampler's latents as they are."""
    if next(decoder.parameters()).device != latents.device:
        decoder.to(latents.device)
    with torch.no_grad():
        rgb = decoder.decode(latents.float()).sample
    return ((rgb + 1) / 2).clamp(0, 1)


def preview_for(pipe, decoder_folder: Path | None = None) -> Picture | None:
    """How to picture `pipe`'s latents, or None where nothing fits (not 4 latent channels
    and no decoder). The decoder is loaded here, so a bad folder fails before any step."""
    channels = pipe.unet.config.in_channels
    decoder = load_decoder(decoder_folder) if decoder_folder is not None else None
    if decoder is not None and decoder.config.latent_channels != channels:
        raise InputError(
            f"Preview decoder {decoder_folder} takes {decoder.config.latent_channels}-channel "
            f"latents but this model makes {channels}-channel ones: use a decoder made for "
            "this model family, or leave the setting empty.")
    if decoder is None and channels != len(LATENT_RGB):
        return None
    scale = getattr(pipe, "vae_scale_factor", 8)
    matrix, bias = latent_rgb_map(pipeline_family(pipe))

    def picture(latents: torch.Tensor) -> list[Image.Image]:
        size = (latents.shape[-1] * scale, latents.shape[-2] * scale)
        rgb = (decoded_rgb(decoder, latents) if decoder is not None
               else approximate_rgb(latents, matrix, bias))
        return to_images(rgb, size)

    return picture
