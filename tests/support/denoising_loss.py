"""A fixed-noise denoising loss: the yardstick for whether a LoRA learned its images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dreamstudio.core.models import prediction_type
from dreamstudio.train.latents import LatentCache, tokenize


def fixed_noise_loss(pipe, pixels: torch.Tensor, prompt: str, seed: int = 0,
                     num_timesteps: int = 8) -> float:
    """Denoising loss of `pipe` on `pixels` at fixed noise and evenly spread timesteps.

    The same seed gives the same noise, timesteps and latent samples, so comparing this
    number before and after training measures what the LoRA learned.
    """
    from diffusers import DDPMScheduler

    device = pipe.unet.device
    generator = torch.Generator().manual_seed(seed)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    total = scheduler.config.num_train_timesteps
    timesteps = torch.linspace(total * 0.05, total * 0.95, num_timesteps).long()
    with torch.no_grad():
        cache = LatentCache(pipe.vae, pixels, device, pipe.vae.dtype)
        embeds = pipe.text_encoder(tokenize(pipe.tokenizer, [prompt]).to(device))[0]
        losses = []
        for i in range(len(cache)):
            latents = cache.sample(torch.tensor([i]), generator).repeat(num_timesteps, 1, 1, 1)
            noise = torch.randn(latents.shape, generator=generator)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            pred = pipe.unet(noisy.to(device), timesteps.to(device),
                             embeds.repeat(num_timesteps, 1, 1)).sample.float().cpu()
            target = noise
            if prediction_type(scheduler) == "v_prediction":
                target = scheduler.get_velocity(latents, noise, timesteps)
            losses.append(F.mse_loss(pred, target).item())
    return sum(losses) / len(losses)
