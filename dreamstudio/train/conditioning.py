"""What the UNet is conditioned on during training: prompt embeddings and, on SDXL, the
pooled embedding and the size / crop ids.

`TextConditioner` is the one place the step and the trainer turn prompts into token ids and
token ids into a `Conditioning`:

- SD 1.x / 2.x: one tokenizer (ids B x 77) and `text_encoder(ids)[0]`, as always.
- SDXL: both tokenizers (ids B x 2 x 77, one row per tokenizer); the embedding is both
  encoders' penultimate hidden states concatenated on the last axis, the pooled embedding
  the second encoder's projected `text_embeds`, as SDXL was trained and as its pipeline
  encodes a prompt.

SDXL's size / crop conditioning (`time_ids`, six numbers per training image), following the
paper's micro-conditioning: (original height, original width, crop top, crop left, target
height, target width).

- A crop the prepared folder's manifest knows (`PhotoResult.image_size` [w, h] of the
  original photo, `crop_box` [x0, y0, x1, y1] in its pixels): the original size is the
  photo's, and the crop's top-left is measured in the frame where the crop is `resolution`
  pixels wide (the photo scaled by resolution / crop side), i.e. y0 and x0 times
  resolution / side.
- Any other file (a plain folder, class images): its own size, and the centre crop that
  `latents.to_training_tensor` cuts after scaling the shorter side to `resolution`.
- The target size is always (resolution, resolution).
- A flipped copy mirrors the crop: its left becomes the scaled width less the crop's right
  edge; its top stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..data.manifest import has_manifest, training_results
from .latents import LoadedImages, tokenize


def _rows(t: torch.Tensor | None, rows) -> torch.Tensor | None:
    return None if t is None else t[rows]


def repeat_rows(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """`t` stacked n times along its first axis (any number of axes)."""
    return None if t is None else t.repeat(n, *([1] * (t.dim() - 1)))


@dataclass
class Conditioning:
    """A batch's conditioning: row i conditions image i."""

    embeds: torch.Tensor  # B x 77 x D
    pooled: torch.Tensor | None = None  # B x P (SDXL)
    time_ids: torch.Tensor | None = None  # B x 6 (SDXL)

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def __getitem__(self, rows) -> Conditioning:
        return Conditioning(self.embeds[rows], _rows(self.pooled, rows),
                            _rows(self.time_ids, rows))

    def repeat(self, n: int) -> Conditioning:
        return Conditioning(repeat_rows(self.embeds, n), repeat_rows(self.pooled, n),
                            repeat_rows(self.time_ids, n))

    def with_time_ids(self, time_ids: torch.Tensor | None) -> Conditioning:
        return replace(self, time_ids=time_ids)

    @staticmethod
    def cat(parts: Sequence[Conditioning]) -> Conditioning:
        def joined(tensors):
            return None if tensors[0] is None else torch.cat(tensors)

        return Conditioning(torch.cat([p.embeds for p in parts]),
                            joined([p.pooled for p in parts]),
                            joined([p.time_ids for p in parts]))

    def unet_kwargs(self) -> dict:
        """The UNet call's conditioning arguments."""
        kwargs = {"encoder_hidden_states": self.embeds}
        if self.pooled is not None:
            kwargs["added_cond_kwargs"] = {"text_embeds": self.pooled,
                                           "time_ids": self.time_ids.to(self.embeds.dtype)}
        return kwargs


class TextConditioner:
    """The pipeline's tokenizer(s) and the session's text encoder(s) (LoRA-wrapped or
    prepared ones are given after they are made)."""

    def __init__(self, pipe, text_encoder=None, text_encoder_2=None):
        self.tokenizer = pipe.tokenizer
        self.tokenizer_2 = getattr(pipe, "tokenizer_2", None)
        self.text_encoder = text_encoder if text_encoder is not None else pipe.text_encoder
        self.text_encoder_2 = text_encoder_2 if text_encoder_2 is not None else getattr(
            pipe, "text_encoder_2", None)

    @property
    def sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids: B x 77, or on SDXL B x 2 x 77 (each tokenizer's own ids)."""
        ids = tokenize(self.tokenizer, prompts)
        if not self.sdxl:
            return ids
        return torch.stack([ids, tokenize(self.tokenizer_2, prompts)], dim=1)

    def encode(self, ids: torch.Tensor) -> Conditioning:
        """The conditioning of token ids from `tokenize` (no time ids: they are the images')."""
        if not self.sdxl:
            return Conditioning(self.text_encoder(ids)[0])
        first = self.text_encoder(ids[:, 0], output_hidden_states=True)
        second = self.text_encoder_2(ids[:, 1], output_hidden_states=True)
        embeds = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        return Conditioning(embeds, second.text_embeds)


def _time_ids(size: tuple[int, int], top: float, left: float, resolution: int) -> list[float]:
    w, h = size
    return [float(h), float(w), float(top), float(left), float(resolution), float(resolution)]


def _centre_crop(size: tuple[int, int], resolution: int) -> tuple[int, int, int]:
    """(top, left, scaled width) of `to_training_tensor`'s crop of an image of `size`."""
    w, h = size
    if (w, h) == (resolution, resolution):
        return 0, 0, resolution
    scale = resolution / min(w, h)
    sw, sh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    return (sh - resolution) // 2, (sw - resolution) // 2, sw


def image_time_ids(result, size: tuple[int, int], resolution: int,
                   mirrored: bool = False) -> list[float]:
    """One image's six time ids (see the module's rule); `result` its manifest entry, or
    None for a file the manifest does not know; `size` the file's own (w, h)."""
    if result is not None and result.image_size and result.crop_box:
        w, h = result.image_size
        x0, y0, x1, _ = result.crop_box
        scale = resolution / max(x1 - x0, 1)
        left = (w - x1) * scale if mirrored else x0 * scale
        return _time_ids((w, h), max(y0 * scale, 0.0), max(left, 0.0), resolution)
    top, left, width = _centre_crop(size, resolution)
    return _time_ids(size, top, width - left - resolution if mirrored else left, resolution)


def time_ids_for(folder: Path | None, images: LoadedImages, resolution: int,
                 mirrored: bool = False) -> torch.Tensor:
    """N x 6 time ids of the loaded `images` (of `folder`, whose manifest may know their
    crops); `mirrored` appends those of the flipped copies, as the latent cache does."""
    known = {}
    if folder is not None and has_manifest(folder):
        known = {r.output: r for r in training_results(folder) if r.output}
    entries = [(known.get(Path(p).name), size) for p, size in zip(images.files, images.sizes,
                                                                   strict=True)]
    rows = [image_time_ids(r, size, resolution) for r, size in entries]
    if mirrored:
        rows += [image_time_ids(r, size, resolution, mirrored=True) for r, size in entries]
    return torch.tensor(rows, dtype=torch.float32)
