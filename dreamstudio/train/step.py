"""One optimisation step of a training session: draw a batch, noise it, predict, update."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import TrainingError
from .losses import min_snr_weights, offset_noise, weighted_mse
from .session import TrainingSession


@dataclass
class Batch:
    latents: torch.Tensor  # instance latents, then (with class images) as many class ones
    ids: torch.Tensor  # their prompts' token ids
    embeds: torch.Tensor | None  # their prompt embeddings while the text encoder is frozen
    face_weights: torch.Tensor | None  # B x 1 x h x w, instance images only


def _orient(session: TrainingSession, indices: torch.Tensor, cache) -> torch.Tensor:
    """With flips on, the second half of the cached latents are the mirrored images."""
    if not session.config.flip:
        return indices
    n = len(cache) // 2
    flips = torch.randint(0, 2, (len(indices),), generator=session.generator)
    return indices + flips * n


def _loss(session: TrainingSession, pred: torch.Tensor, target: torch.Tensor,
          timesteps: torch.Tensor, face_weights: torch.Tensor | None,
          prior_target: torch.Tensor | None = None) -> torch.Tensor:
    """The instance loss (min-SNR and face weighted when on) plus the prior loss: on the
    class images' own target, or with prior prediction on the base model's prediction."""
    class_pred = class_target = None
    if session.with_prior or prior_target is not None:
        # The batch is the instance images followed by as many class ones.
        pred, class_pred = pred.chunk(2)
        target, class_target = target.chunk(2) if session.with_prior else (target,
                                                                            prior_target)
        timesteps = timesteps[: len(pred)]
    gamma = session.config.min_snr_gamma
    weights = (min_snr_weights(timesteps, session.noise_scheduler, gamma, session.target_kind)
               if gamma else None)
    loss = weighted_mse(pred, target, face_weights, weights)
    if class_pred is not None:
        prior = F.mse_loss(class_pred, class_target)
        session.prior_losses.append(prior.item())
        loss = loss + session.config.prior_loss_weight * prior
    return loss


def _batch(session: TrainingSession) -> Batch:
    """Latents, token ids, prompt embeddings and face weights of one step."""
    s, size = session, session.config.batch_size
    drawn = _orient(s, s.batches.next(), s.instance_latents)
    latents = s.instance_latents.sample(drawn, s.generator)
    faces = s.face_weights[drawn].to(s.device) if s.face_weights is not None else None
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
    return Batch(latents.to(s.device), ids, embeds, faces)


def base_prediction(session: TrainingSession, noisy: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    """The base model's prediction (every LoRA off, no gradient) for the class prompt:
    the prior prediction's target."""
    s = session
    unet = s.accelerator.unwrap_model(s.unet)
    embeds = s.base_class_embeds.repeat(len(noisy), 1, 1)
    with torch.no_grad(), s.accelerator.autocast():
        unet.disable_adapters()
        try:
            return unet(noisy, timesteps, embeds).sample.float()
        finally:
            unet.enable_adapters()


def _predict(session: TrainingSession, noisy: torch.Tensor, timesteps: torch.Tensor,
             batch: Batch) -> torch.Tensor:
    """The LoRA model's prediction for the batch; with prior prediction followed by its
    prediction for the class prompt on the same noisy latents."""
    s, size, embeds = session, len(noisy), batch.embeds
    with s.accelerator.autocast():
        if not s.prior_prediction:
            if embeds is None:
                embeds = s.text_encoder(batch.ids)[0]
            return s.unet(noisy, timesteps, embeds).sample
        if s.accelerator.num_processes > 1:
            # Data parallel allows one forward pass per model and step: the class prompt
            # rides in the instance batch.
            if embeds is None:
                embeds = s.text_encoder(torch.cat([batch.ids, s.class_ids.repeat(size, 1)]))[0]
            else:
                embeds = torch.cat([embeds, s.base_class_embeds.repeat(size, 1, 1)])
            return s.unet(torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]),
                          embeds).sample
        # Apart, in the base prediction's shapes, so that a LoRA at scale 0 gives exactly
        # the base's output (batched kernels differ in the last bits).
        if embeds is None:
            embeds = s.text_encoder(batch.ids)[0]
            class_embeds = s.text_encoder(s.class_ids)[0].repeat(size, 1, 1)
        else:  # a frozen text encoder carries no LoRA: its class embedding is the base's
            class_embeds = s.base_class_embeds.repeat(size, 1, 1)
        pred = s.unet(noisy, timesteps, embeds).sample
        return torch.cat([pred, s.unet(noisy, timesteps, class_embeds).sample])


def training_step(session: TrainingSession, step: int) -> float:
    """Run step `step` (0-based) and return its loss; TrainingError on a non-finite loss."""
    s, cfg = session, session.config
    batch = _batch(s)
    latents = batch.latents
    scheduler = s.noise_scheduler
    noise = torch.randn(latents.shape, generator=s.generator).to(s.device)
    noise = offset_noise(noise, cfg.noise_offset, s.generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps,
                              (latents.shape[0],), generator=s.generator).to(s.device)
    noisy = scheduler.add_noise(latents, noise, timesteps).to(s.weight_dtype)
    prior_target = base_prediction(s, noisy, timesteps) if s.prior_prediction else None
    pred = _predict(s, noisy, timesteps, batch)
    target = (scheduler.get_velocity(latents, noise, timesteps)
              if s.target_kind == "v_prediction" else noise)
    loss = _loss(s, pred.float(), target.float(), timesteps, batch.face_weights, prior_target)
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
