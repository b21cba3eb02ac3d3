"""One optimisation step of a training session: draw a batch, noise it, predict, update."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import TrainingError
from .conditioning import Conditioning, repeat_rows
from .losses import min_snr_weights, offset_noise, weighted_mse
from .session import TrainingSession


@dataclass
class Batch:
    latents: torch.Tensor  # instance latents, then (with class images) as many class ones
    ids: torch.Tensor  # their prompts' token ids (TextConditioner.tokenize)
    # Their conditioning while the text encoders are frozen (else None: encoded each step).
    cond: Conditioning | None
    face_weights: torch.Tensor | None  # B x 1 x h x w, instance images only
    # SDXL: each latent's size / crop ids (B x 6), else None.
    time_ids: torch.Tensor | None = None


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


def _time_ids(cached: torch.Tensor | None, drawn: torch.Tensor, device) -> torch.Tensor | None:
    return None if cached is None else cached[drawn].to(device)


def _batch(session: TrainingSession) -> Batch:
    """Latents, token ids, conditioning, time ids and face weights of one step."""
    s, size = session, session.config.batch_size
    drawn = _orient(s, s.batches.next(), s.instance_latents)
    latents = s.instance_latents.sample(drawn, s.generator)
    faces = s.face_weights[drawn].to(s.device) if s.face_weights is not None else None
    time_ids = _time_ids(s.instance_time_ids, drawn, s.device)
    # Each drawn image's own prompt; a flipped one (index + N) keeps its photo's caption.
    photos = (drawn % len(s.instance_ids)).to(s.instance_ids.device)
    ids = s.instance_ids[photos]
    cond = s.cached_embeds["instance"][photos] if s.cached_embeds else None
    if s.with_prior:
        class_drawn = _orient(s, s.class_batches.next(), s.class_latents)
        class_latents = s.class_latents.sample(class_drawn, s.generator)
        latents = torch.cat([latents, class_latents])
        ids = torch.cat([ids, repeat_rows(s.class_ids, size)])
        if time_ids is not None:
            time_ids = torch.cat([time_ids, _time_ids(s.class_time_ids, class_drawn, s.device)])
        if s.cached_embeds:
            cond = Conditioning.cat([cond, s.cached_embeds["class"].repeat(size)])
    return Batch(latents.to(s.device), ids, cond, faces, time_ids)


def _unet(unet, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
          time_ids: torch.Tensor | None):
    return unet(noisy, timesteps, **cond.with_time_ids(time_ids).unet_kwargs()).sample


def _instance_time_ids(batch: Batch, size: int) -> torch.Tensor | None:
    """The instance images' time ids: the prior prediction's class prompt sees the same
    noisy latents, so the same images."""
    return None if batch.time_ids is None else batch.time_ids[:size]


def base_prediction(session: TrainingSession, noisy: torch.Tensor, timesteps: torch.Tensor,
                    time_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The base model's prediction (every LoRA off, no gradient) for the class prompt:
    the prior prediction's target."""
    s = session
    unet = s.accelerator.unwrap_model(s.unet)
    cond = s.base_class_embeds.repeat(len(noisy))
    with torch.no_grad(), s.accelerator.autocast():
        unet.disable_adapters()
        try:
            return _unet(unet, noisy, timesteps, cond, time_ids).float()
        finally:
            unet.enable_adapters()


def _predict(session: TrainingSession, noisy: torch.Tensor, timesteps: torch.Tensor,
             batch: Batch) -> torch.Tensor:
    """The LoRA model's prediction for the batch; with prior prediction followed by its
    prediction for the class prompt on the same noisy latents."""
    s, size, cond = session, len(noisy), batch.cond
    with s.accelerator.autocast():
        if not s.prior_prediction:
            if cond is None:
                cond = s.text.encode(batch.ids)
            return _unet(s.unet, noisy, timesteps, cond, batch.time_ids)
        time_ids = _instance_time_ids(batch, size)
        if s.accelerator.num_processes > 1:
            # Data parallel allows one forward pass per model and step: the class prompt
            # rides in the instance batch.
            if cond is None:
                cond = s.text.encode(torch.cat([batch.ids, repeat_rows(s.class_ids, size)]))
            else:
                cond = Conditioning.cat([cond, s.base_class_embeds.repeat(size)])
            both = None if time_ids is None else torch.cat([time_ids, time_ids])
            return _unet(s.unet, torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]),
                         cond, both)
        # Apart, in the base prediction's shapes, so that a LoRA at scale 0 gives exactly
        # the base's output (batched kernels differ in the last bits).
        if cond is None:
            cond = s.text.encode(batch.ids)
            class_cond = s.text.encode(s.class_ids).repeat(size)
        else:  # frozen text encoders carry no LoRA: their class embedding is the base's
            class_cond = s.base_class_embeds.repeat(size)
        pred = _unet(s.unet, noisy, timesteps, cond, time_ids)
        return torch.cat([pred, _unet(s.unet, noisy, timesteps, class_cond, time_ids)])


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
    prior_target = (base_prediction(s, noisy, timesteps, _instance_time_ids(batch, len(noisy)))
                    if s.prior_prediction else None)
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
