"""One optimisation step of a training session: draw a batch, noise it, predict, update."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import TrainingError
from .session import TrainingSession


def _orient(session: TrainingSession, indices: torch.Tensor, cache) -> torch.Tensor:
    """With flips on, the second half of the cached latents are the mirrored images."""
    if not session.config.flip:
        return indices
    n = len(cache) // 2
    flips = torch.randint(0, 2, (len(indices),), generator=session.generator)
    return indices + flips * n


def _loss(session: TrainingSession, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if not session.with_prior:
        return F.mse_loss(pred, target)
    # The batch is the instance images followed by as many class images.
    pred, class_pred = pred.chunk(2)
    target, class_target = target.chunk(2)
    return F.mse_loss(pred, target) + session.config.prior_loss_weight * F.mse_loss(
        class_pred, class_target)


def _batch(session: TrainingSession) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Latents, token ids and (with a frozen text encoder) prompt embeddings of one step."""
    s, size = session, session.config.batch_size
    drawn = _orient(s, s.batches.next(), s.instance_latents)
    latents = s.instance_latents.sample(drawn, s.generator)
    # Each drawn image's own prompt; a flipped one (index + N) keeps its photo's caption.
    photos = (drawn % len(s.instance_ids)).to(s.instance_ids.device)
    ids = s.instance_ids[photos]
    embeds = s.cached_embeds["instance"][photos] if s.cached_embeds else None
    if s.with_prior:
        class_latents = s.class_latents.sample(
            _orient(s, s.class_batches.next(), s.class_latents), s.generator)
        latents = torch.cat([latents, class_latents])
        ids = torch.cat([ids, s.class_ids.repeat(size, 1)])
        if s.cached_embeds:
            embeds = torch.cat([embeds, s.cached_embeds["class"].repeat(size, 1, 1)])
    return latents.to(s.device), ids, embeds


def training_step(session: TrainingSession, step: int) -> float:
    """Run step `step` (0-based) and return its loss; TrainingError on a non-finite loss."""
    s, cfg = session, session.config
    latents, ids, embeds = _batch(s)
    scheduler = s.noise_scheduler
    noise = torch.randn(latents.shape, generator=s.generator).to(s.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps,
                              (latents.shape[0],), generator=s.generator).to(s.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    with s.accelerator.autocast():
        if embeds is None:
            embeds = s.text_encoder(ids)[0]
        pred = s.unet(noisy.to(s.weight_dtype), timesteps, embeds).sample
    target = (scheduler.get_velocity(latents, noise, timesteps)
              if s.target_kind == "v_prediction" else noise)
    loss = _loss(s, pred.float(), target.float())
    if not torch.isfinite(loss):
        raise TrainingError(
            f"The loss became {loss.item()} at step {step + 1}; training stopped and "
            "no LoRA was written (any earlier LoRA is untouched). Lower the learning "
            "rate, or use bf16/no mixed precision instead of fp16."
        )
    s.accelerator.backward(loss)
    if s.accelerator.sync_gradients:
        s.accelerator.clip_grad_norm_(s.trainable, cfg.max_grad_norm)
    s.optimizer.step()
    s.lr_scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    return loss.item()
