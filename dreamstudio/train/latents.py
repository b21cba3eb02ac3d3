"""Training images as tensors, and the VAE latents / prompt embeddings cached from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.images import ImageRejected, open_rgb
from ..data.manifest import has_manifest, image_files, training_captions, training_results
from ..errors import InputError
from .losses import face_weight_map


def to_training_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """Resize the shorter side to `resolution`, centre-crop, scale to [-1, 1], CHW float32."""
    w, h = image.size
    scale = resolution / min(w, h)
    if (w, h) != (resolution, resolution):
        image = image.resize(
            (max(resolution, round(w * scale)), max(resolution, round(h * scale))),
            Image.Resampling.LANCZOS,
        )
        w, h = image.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@dataclass
class LoadedImages:
    pixels: torch.Tensor  # N x 3 x R x R in [-1, 1]
    files: list[Path]
    skipped: list[tuple[Path, str]]  # (file, reason) that could not be used
    # Each file's caption from the prepared folder's manifest (None: none); empty when
    # the files were loaded without one (class images).
    captions: list[str | None] = field(default_factory=list)
    # Each file's own size (w, h) before resizing: SDXL's size conditioning of files the
    # manifest does not know.
    sizes: list[tuple[int, int]] = field(default_factory=list)


def load_images(folder: Path, resolution: int, what: str = "instance") -> LoadedImages:
    """Load every usable image, with its caption; unusable ones are skipped and reported,
    never fatal alone."""
    loaded = load_image_files(image_files(folder), resolution, what, folder)
    captions = training_captions(folder)
    loaded.captions = [captions.get(path.name) for path in loaded.files]
    return loaded


def load_image_files(files: list[Path], resolution: int, what: str,
                     folder: Path) -> LoadedImages:
    """load_images for the chosen `files` of `folder` (e.g. the class images of a run)."""
    tensors, used, skipped, sizes = [], [], [], []
    for path in files:
        try:
            image = open_rgb(path)
            tensors.append(to_training_tensor(image, resolution))
            used.append(path)
            sizes.append(image.size)
        except (ImageRejected, OSError) as exc:
            skipped.append((path, str(exc)))
    if not tensors:
        detail = f" ({len(skipped)} file(s) could not be read)" if skipped else ""
        raise InputError(
            f"No usable {what} images in {folder}{detail}. Add JPEG/PNG/WebP photos "
            "(or prepare them on the Data tab) and try again."
        )
    return LoadedImages(torch.stack(tensors), used, skipped, sizes=sizes)


def face_weight_maps(folder: Path, files: list[Path], size: int, inside: float,
                     outside: float, mirrored: bool = False) -> torch.Tensor:
    """One size x size loss weight map per file (N x 1 x size x size), from the face box
    the folder's manifest records for each crop; files it knows no face of weigh 1.
    `mirrored` appends the maps of the flipped images, as the latent cache does."""
    known = {}
    if has_manifest(folder):
        known = {r.output: r for r in training_results(folder) if r.output}
    maps = []
    for path in files:
        r = known.get(Path(path).name)
        face, crop = (r.face_box, r.crop_box) if r is not None else (None, None)
        maps.append(face_weight_map(face, crop, size, inside, outside))
    stacked = torch.stack(maps)[:, None]
    return torch.cat([stacked, stacked.flip(-1)]) if mirrored else stacked


class LatentCache:
    """VAE posterior (mean, std) per image, encoded once; each step draws a fresh sample.

    Sampling from the cached posterior is exactly what encoding every step would give,
    at a fraction of the cost (the VAE encoder is a third of a CPU training step).
    """

    def __init__(self, vae, pixels: torch.Tensor, device, dtype, batch: int = 4):
        means, stds = [], []
        with torch.no_grad():
            for chunk in pixels.split(batch):
                dist = vae.encode(chunk.to(device=device, dtype=dtype)).latent_dist
                means.append(dist.mean.float())
                stds.append(dist.std.float())
        self.mean = torch.cat(means)
        self.std = torch.cat(stds)
        self.scaling = vae.config.scaling_factor
        self.shift = getattr(vae.config, "shift_factor", None) or 0.0

    def __len__(self) -> int:
        return self.mean.shape[0]

    def sample(self, indices: torch.Tensor, generator: torch.Generator | None = None):
        mean, std = self.mean[indices], self.std[indices]
        eps = torch.randn(mean.shape, generator=generator, device="cpu").to(mean.device)
        return (mean + std * eps - self.shift) * self.scaling


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids, one row per prompt (a run's instance prompts: one per photo)."""
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
