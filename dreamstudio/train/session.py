"""The state of one training session: what its stages build, and what the loop, checkpoints
and resume read and change.

Kept apart from the stages (trainer.py) so that the per-step code and checkpointing can take
the session as their one argument without importing the trainer.
"""

from __future__ import annotations

import threading
import time

import torch

from ..config import TrainConfig
from .events import ProgressFn, TrainProgress
from .latents import LoadedImages

_WEIGHT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TrainingSession:
    """One call of `train`. Attributes set to None here are filled by the trainer's stages,
    in the order listed."""

    def __init__(self, config: TrainConfig, pipe, instance: LoadedImages, device: torch.device,
                 precision: str, progress: ProgressFn, cancel: threading.Event):
        self.config, self.pipe, self.device = config, pipe, device
        self.precision, self.progress, self.cancel = precision, progress, cancel
        self.instance = instance
        # Frozen weights run in this dtype; trainable LoRA weights stay fp32.
        self.weight_dtype = _WEIGHT_DTYPES.get(precision, torch.float32)
        self.start = time.monotonic()
        self.skipped = [(str(p), r) for p, r in instance.skipped]
        self.losses: list[float] = []
        self.prior_losses: list[float] = []  # the prior part of each step's loss, if any
        self.validation_images: list[str] = []
        # Checkpoint scoring (scoring.py): the points so far, its loaded scorers, and why
        # it stopped if it did.
        self.fidelity: list[dict] = []
        self.scoring = None
        self.fidelity_note: str | None = None

        # 1. Class images
        self.class_images: LoadedImages | None = None
        # 2. Accelerator and models
        self.accelerator = None
        self.unet = self.vae = self.text_encoder = None
        self.text_encoder_2 = None  # SDXL's second text encoder (None on SD 1.x / 2.x)
        # The tokenizer(s) and text encoder(s) as one (conditioning.py); rebuilt once the
        # encoders are wrapped (LoRA, accelerate).
        self.text = None
        self.noise_scheduler = None
        self.target_kind: str | None = None  # "epsilon" or "v_prediction"
        self.pivotal = None  # PivotalTokens (pivotal.py) when pivotal tuning is on
        # 3. Cached latents and prompt embeddings
        self.instance_latents = self.class_latents = None
        # One row per instance photo: its caption made a prompt, or the instance prompt.
        # B x 77 token ids, on SDXL B x 2 x 77 (TextConditioner.tokenize).
        self.instance_ids: torch.Tensor | None = None
        self.instance_prompts: list[str] = []
        self.captions: dict[str, str] = {}  # crop name -> caption, of the photos that have one
        self.class_ids: torch.Tensor | None = None
        # Conditionings ("instance": one per photo, "class": one row) while the text
        # encoders are frozen.
        self.cached_embeds: dict | None = None
        # Prior prediction: the base text encoders' class prompt conditioning (never changes).
        self.base_class_embeds = None
        # SDXL: each cached latent's size / crop ids (N x 6, the flipped ones after).
        self.instance_time_ids: torch.Tensor | None = None
        self.class_time_ids: torch.Tensor | None = None
        # Face-weighted loss: a latent-size weight map per cached instance latent.
        self.face_weights: torch.Tensor | None = None
        # 4. LoRA and optimizer
        self.optimizer = self.lr_scheduler = None
        self.trainable: list[torch.nn.Parameter] = []
        self.generator: torch.Generator | None = None
        self.batches = self.class_batches = None

    @property
    def with_prior(self) -> bool:
        """Prior preservation from class images: each batch has as many class images."""
        return self.class_latents is not None

    def prompt(self, text: str) -> str:
        """A prompt as the pipeline takes it: the identifier as the pivotal token, if any."""
        return self.pivotal.prompt(text) if self.pivotal else text

    @property
    def sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    def text_encoders(self) -> list:
        """The session's text encoder(s), the first one first."""
        return [m for m in (self.text_encoder, self.text_encoder_2) if m is not None]

    @property
    def prior_prediction(self) -> bool:
        """Prior preservation from the base model's prediction for the class prompt."""
        return self.config.with_prior_preservation and self.config.prior_mode == "prediction"

    def emit(self, phase: str, step: int, **kw) -> None:
        self.progress(TrainProgress(phase, step=step, total_steps=self.config.steps,
                                    elapsed=time.monotonic() - self.start,
                                    validation_images=list(self.validation_images),
                                    fidelity=[dict(p) for p in self.fidelity],
                                    fidelity_note=self.fidelity_note, **kw))
