"""The formulas of the loss-side training methods: min-SNR-gamma weights, offset noise,
face weight maps, and the weighted mean squared error they feed.

Pure tensor functions (no session), so each can be checked against its formula alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def snr(timesteps: torch.Tensor, scheduler) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) of each timestep."""
    alphas = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float64)
    a = alphas[timesteps.long()]
    return (a / (1 - a)).float()


def min_snr_weights(timesteps: torch.Tensor, scheduler, gamma: float,
                    prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights of Min-SNR-gamma (Hang et al. 2023).

    The weight min(SNR, gamma) is stated for a loss on x0; an epsilon loss is SNR times
    that, a v loss SNR + 1 times, so those are divided out.
    """
    ratio = snr(timesteps, scheduler)
    clipped = ratio.clamp(max=gamma)
    if prediction_type == "v_prediction":
        return clipped / (ratio + 1)
    return clipped / ratio


def offset_noise(noise: torch.Tensor, strength: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """`noise` plus a per-image, per-channel constant: diffusion then also learns to move an
    image's mean brightness, which plain noise leaves almost untouched."""
    if not strength:
        return noise
    shift = torch.randn((noise.shape[0], noise.shape[1], 1, 1), generator=generator)
    return noise + strength * shift.to(noise.device, noise.dtype)


def face_weight_map(face_box: Sequence[float] | None, crop_box: Sequence[float] | None,
                    size: int, inside: float, outside: float) -> torch.Tensor:
    """A size x size weight map of a square crop: `inside` on the face, `outside` elsewhere,
    cells on the face's border weighted by how much of them the face covers.

    Both boxes are (x0, y0, x1, y1) in the upright photo's pixels; without either the map
    is 1 everywhere (no face known: the image is trained as usual).
    """
    if face_box is None or crop_box is None:
        return torch.ones(size, size)
    cx0, cy0, cx1, cy1 = (float(v) for v in crop_box)
    fx0, fy0, fx1, fy1 = (float(v) for v in face_box)
    # The face in the crop's cell units, clipped to the crop.
    xs = ((fx0 - cx0) / (cx1 - cx0) * size, (fx1 - cx0) / (cx1 - cx0) * size)
    ys = ((fy0 - cy0) / (cy1 - cy0) * size, (fy1 - cy0) / (cy1 - cy0) * size)
    cells = torch.arange(size, dtype=torch.float64)
    cover_x = (torch.minimum(cells + 1, torch.tensor(xs[1]))
               - torch.maximum(cells, torch.tensor(xs[0]))).clamp(0, 1)
    cover_y = (torch.minimum(cells + 1, torch.tensor(ys[1]))
               - torch.maximum(cells, torch.tensor(ys[0]))).clamp(0, 1)
    cover = (cover_y[:, None] * cover_x[None, :]).float()
    return outside + (inside - outside) * cover


def weighted_mse(pred: torch.Tensor, target: torch.Tensor,
                 pixel_weights: torch.Tensor | None = None,
                 sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error; `pixel_weights` (B x 1 x H x W) scale each latent position,
    `sample_weights` (B) each image's mean. With neither it is F.mse_loss."""
    if pixel_weights is None and sample_weights is None:
        return F.mse_loss(pred, target)
    error = (pred - target) ** 2
    if pixel_weights is not None:
        error = error * pixel_weights.to(error.device, error.dtype)
    per_sample = error.mean(dim=tuple(range(1, error.ndim)))
    if sample_weights is not None:
        per_sample = per_sample * sample_weights.to(per_sample.device, per_sample.dtype)
    return per_sample.mean()
