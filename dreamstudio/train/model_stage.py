"""The trainer's model stages: the session's models frozen and cast (stage 2), then the LoRA
on the UNet and the text encoder(s), the optimizer and the data order (stage 4).

On SDXL both text encoders get a LoRA when the text encoder trains; the second one's learning
rate is `text_encoder_2_lr`, or the first one's when unset.
"""

from __future__ import annotations

import torch

from ..errors import TrainingError
from ..lora.adapters import TEXT_ENCODER_TARGETS, UNET_TARGETS, add_lora, peft_weights
from .conditioning import TextConditioner
from .identifiers import identifier_of
from .pivotal import attach_pivotal
from .session import TrainingSession
from .setup import (
    Batches,
    apply_speedups,
    cast_frozen,
    make_lr_scheduler,
    make_optimizer,
    new_accelerator,
)


def load_models(session: TrainingSession) -> None:
    """Stage 2: accelerator, the frozen models (cast to the run's precision), the noise
    schedule and, with pivotal tuning, the new tokens."""
    from diffusers import DDPMScheduler

    from ..core.models import prediction_type

    s, pipe = session, session.pipe
    s.text_encoder_2 = getattr(pipe, "text_encoder_2", None)
    s.accelerator = new_accelerator(s.precision, s.device,
                                    unused_weights=s.text_encoder_2 is not None)
    s.unet, s.vae, s.text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
    s.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    s.target_kind = prediction_type(s.noise_scheduler, s.config.model)
    for model in (s.unet, s.vae, *s.text_encoders()):
        model.requires_grad_(False)
    # The VAE is not cast: it encodes the latents in fp32 and renders validation images.
    if s.weight_dtype != torch.float32:
        for model in (s.unet, *s.text_encoders()):
            cast_frozen(model, s.weight_dtype)
    if s.config.pivotal:
        # On SDXL the tokens go into both tokenizers and both encoders get rows.
        s.pivotal = attach_pivotal(
            pipe.tokenizer, s.text_encoder, identifier_of(s.config.instance_prompt,
                                                          s.config.class_prompt, pipe.tokenizer),
            s.config.pivotal_tokens, s.config.instance_prompt,
            getattr(pipe, "tokenizer_2", None), s.text_encoder_2)
    s.text = TextConditioner(pipe, s.text_encoder, s.text_encoder_2)


def _text_encoder_groups(session: TrainingSession) -> list[dict]:
    cfg = session.config
    lrs = [cfg.text_encoder_lr, cfg.text_encoder_2_lr or cfg.text_encoder_lr]
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}
            for model, lr in zip(session.text_encoders(), lrs, strict=False)]


def attach_lora_and_optimizer(session: TrainingSession) -> None:
    """Stage 4: the LoRA adapters, the optimizer and schedule, accelerate's preparation, the
    data order."""
    from diffusers.training_utils import cast_training_params

    s, cfg = session, session.config
    torch.manual_seed(cfg.seed)  # LoRA init is identical on every process
    add_lora(s.unet, cfg.rank, UNET_TARGETS, cfg.lora_alpha, cfg.use_dora)
    if cfg.train_text_encoder:
        for model in s.text_encoders():
            add_lora(model, cfg.rank, TEXT_ENCODER_TARGETS, cfg.lora_alpha, cfg.use_dora)
    # Trainable LoRA weights stay fp32 under mixed precision, so the optimizer and the
    # grad scaler work on fp32 (no "Attempting to unscale FP16 gradients").
    cast_training_params([s.unet, *s.text_encoders()], dtype=torch.float32)
    apply_speedups(s.unet, s.text_encoders(), cfg, s.device)

    params = [{"params": [p for p in s.unet.parameters() if p.requires_grad],
               "lr": cfg.learning_rate}]
    if cfg.train_text_encoder:
        params += _text_encoder_groups(s)
        for model in s.text_encoders():
            model.train()
    if s.pivotal and cfg.pivotal_stop < 1 and s.accelerator.num_processes > 1:
        # DistributedDataParallel fails on a parameter that stops getting gradients.
        raise TrainingError("Stopping the token training early (pivotal stop below 1) "
                            "works in one process only: set it to 1, or train on one GPU.")
    if s.pivotal:
        # Trainable again: peft froze all but its adapters in the text encoder.
        params.append({"params": [p.requires_grad_() for p in s.pivotal.parameters()],
                       "lr": cfg.pivotal_lr})
    s.unet.train()
    optimizer = make_optimizer(params, cfg.optimizer)
    lr_scheduler = make_lr_scheduler(cfg, optimizer, s.accelerator.num_processes)
    # The embedding rows live in the text encoder(s): they are prepared (for gradient sync)
    # then too.
    with_te = cfg.train_text_encoder or cfg.pivotal
    encoders = s.text_encoders() if with_te else []
    models = [s.unet, *encoders]
    prepared = s.accelerator.prepare(*models, optimizer, lr_scheduler)
    s.unet = prepared[0]
    if with_te:
        s.text_encoder = prepared[1]
        if len(encoders) == 2:
            s.text_encoder_2 = prepared[2]
    s.optimizer, s.lr_scheduler = prepared[-2], prepared[-1]
    s.trainable = [p for group in params for p in group["params"]]
    s.text = TextConditioner(s.pipe, s.text_encoder, s.text_encoder_2)

    # Each process draws its own data and noise (data parallel); one seed per process.
    s.generator = torch.Generator().manual_seed(cfg.seed + s.accelerator.process_index)
    s.batches = Batches(len(s.instance.pixels), cfg.batch_size, s.generator)
    if s.class_latents:
        s.class_batches = Batches(len(s.class_images.pixels), cfg.batch_size, s.generator)


def trained_weights(session: TrainingSession) -> dict:
    """The session's LoRA weights as `peft_weights` keys them (the text encoders' only when
    they train): what the LoRA file and the checkpoints hold."""
    unwrap, cfg = session.accelerator.unwrap_model, session.config
    te = unwrap(session.text_encoder) if cfg.train_text_encoder else None
    te2 = (unwrap(session.text_encoder_2) if cfg.train_text_encoder and session.sdxl
           else None)
    return peft_weights(unwrap(session.unet), te, te2)
