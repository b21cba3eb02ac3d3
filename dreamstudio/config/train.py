"""TrainConfig: how a run trains, with the LoRA DreamBooth notebook's defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

from ..core.architectures import ARCHITECTURES
from ..core.models import DEFAULT_MODEL
from ..errors import InputError
from ..evaluate.scorers import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL
from ..train.identifiers import refuse_identifier_in_class_prompt
from .checks import as_path, check, check_not_a_file, check_seed

MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
OPTIMIZERS = ("adamw", "adamw8bit", "prodigy")
PRODIGY_MISSING = ("The Prodigy optimizer needs the optional package prodigyopt: "
                   "pip install prodigyopt, or choose the AdamW optimizer.")
# "class_images": train on generated pictures of the class; "prediction": the base model's
# own prediction for the class prompt is the target, so no class images are needed.
PRIOR_MODES = ("class_images", "prediction")
# Min-SNR-gamma's gamma where it is simply turned on (the paper's choice).
MIN_SNR_GAMMA = 5.0


@dataclass
class TrainConfig:
    instance_dir: Path = field(metadata={"help": "Folder of the subject's photos (or crops)."})
    instance_prompt: str = field(
        metadata={"help": "Identifier plus class noun, e.g. 'a photo of sks dog'."}
    )
    output_dir: Path = field(metadata={"help": "Where the LoRA and its config are written."})
    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Base model: Hub id, local diffusers folder or .safetensors file."},
    )
    class_dir: Path | None = field(
        default=None, metadata={"help": "Folder of class images; missing ones are generated."}
    )
    class_prompt: str | None = field(
        default=None,
        metadata={"help": "Prompt for the class, e.g. 'a photo of dog'. Enables prior loss."},
    )
    num_class_images: int = field(
        default=100, metadata={"help": "Class images wanted for prior preservation."}
    )
    prior_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of the class (prior) loss."}
    )
    steps: int = field(default=300, metadata={"help": "Optimisation steps."})
    learning_rate: float = field(default=5e-4, metadata={"help": "UNet LoRA learning rate."})
    text_encoder_lr: float = field(
        default=1e-4, metadata={"help": "Text-encoder LoRA learning rate."}
    )
    text_encoder_2_lr: float | None = field(
        default=None,
        metadata={"help": "SDXL: the second text encoder's LoRA learning rate (unset: the "
                          "text-encoder learning rate). Ignored on SD 1.x / 2.x."},
    )
    train_text_encoder: bool = field(
        default=True, metadata={"help": "Also train a LoRA on the text encoder."}
    )
    rank: int = field(default=4, metadata={"help": "LoRA rank."})
    resolution: int = field(default=512, metadata={"help": "Training image side in pixels."})
    seed: int = field(default=0, metadata={"help": "Seed for noise, timesteps and data order."})
    batch_size: int = field(default=1, metadata={"help": "Instance images per step."})
    mixed_precision: str = field(
        default="auto",
        metadata={"help": "'auto' (bf16 where the hardware has it, fp16 on older GPUs), "
                          "'no', 'fp16' or 'bf16'. LoRA weights stay fp32 in every case.",
                  "choices": MIXED_PRECISION_CHOICES},
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations: less memory, ~30% slower."}
    )
    use_8bit_adam: bool = field(
        default=False,
        metadata={"help": "8-bit AdamW from bitsandbytes (CUDA): less memory (the same as "
                          "optimizer 'adamw8bit')."},
    )
    channels_last: bool = field(
        default=True, metadata={"help": "UNet in channels-last memory format (faster convs)."}
    )
    flip: bool = field(
        default=False, metadata={"help": "Random horizontal flips (for symmetric subjects)."}
    )
    lr_scheduler: str = field(
        default="constant",
        metadata={"help": f"Learning-rate schedule: {LR_SCHEDULERS}.", "choices": LR_SCHEDULERS},
    )
    lr_warmup_steps: int = field(default=0, metadata={"help": "Warm-up steps of the schedule."})
    checkpoint_every: int = field(
        default=100, metadata={"help": "Save a resumable checkpoint every N steps (0 = off)."}
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "Checkpoints to keep."})
    resume: bool = field(
        default=False, metadata={"help": "Continue from the latest checkpoint in output_dir."}
    )
    validation_prompt: str | None = field(
        default=None, metadata={"help": "Prompt of the validation images (default: instance)."}
    )
    validation_every: int = field(
        default=100, metadata={"help": "Render validation images every N steps (0 = off)."}
    )
    validation_steps: int = field(default=20, metadata={"help": "Sampler steps per image."})
    num_validation_images: int = field(default=1, metadata={"help": "Images per validation."})
    score_checkpoints: bool = field(
        default=False,
        metadata={"help": "At each checkpoint, draw a few fixed prompts and score subject and "
                          "prompt fidelity (DINO, CLIP-I, CLIP-T) to find the best step "
                          "(slower: score_images images per checkpoint)."},
    )
    score_images: int = field(
        default=2, metadata={"help": "Prompts drawn per scored checkpoint, one image each "
                                     "at a fixed seed (1-8)."}
    )
    score_dino_model: str = field(
        default=DEFAULT_DINO_MODEL,
        metadata={"help": "DINO ViT of checkpoint scoring: Hub id or local folder."},
    )
    score_clip_model: str = field(
        default=DEFAULT_CLIP_MODEL,
        metadata={"help": "CLIP of checkpoint scoring: Hub id or local folder."},
    )
    export_kohya: bool = field(
        default=True,
        metadata={"help": "Also write <subject>.safetensors for A1111 / Forge / ComfyUI."},
    )
    subject_name: str | None = field(
        default=None, metadata={"help": "Name of the kohya file (default: output folder name)."}
    )
    class_image_steps: int = field(
        default=25, metadata={"help": "Sampler steps for each generated class image."}
    )
    class_image_batch_size: int = field(
        default=4, metadata={"help": "Class images generated per batch."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    # Per-image captions
    use_captions: bool = field(
        default=True,
        metadata={"help": "Train each photo that has a caption (Data tab) on it, with the "
                          "identifier put in before the class noun (or the instance prompt "
                          "in front); photos without one use the instance prompt."},
    )
    model_config_dir: str | None = field(
        default=None,
        metadata={"help": "A single-file checkpoint's architecture: "
                          f"{', '.join(ARCHITECTURES)} or a diffusers folder with its configs "
                          "(default: read from the checkpoint)."},
    )
    vae: str | None = field(
        default=None,
        metadata={"help": "A VAE to use instead of the model's own (folder, Hub id or file), "
                          "e.g. an fp16-safe SDXL VAE; default: the model's."},
    )
    device: str | None = field(
        default=None, metadata={"help": "Force a device ('cpu', 'cuda', 'mps')."}
    )
    # --- DoRA, LoRA alpha and the optimizer ---
    use_dora: bool = field(
        default=False,
        metadata={"help": "Train a DoRA (weight-decomposed LoRA): often a closer likeness at "
                          "low rank, slower per step; diffusers, ComfyUI and Forge load it."},
    )
    lora_alpha: int | None = field(
        default=None,
        metadata={"help": "LoRA alpha: the LoRA's strength is alpha / rank (default: the "
                          "rank, a strength of 1)."},
    )
    optimizer: str = field(
        default="adamw",
        metadata={"help": "'adamw', 'adamw8bit' (bitsandbytes, CUDA) or 'prodigy' (finds its "
                          "own step size; pip install prodigyopt; use learning rates of 1).",
                  "choices": OPTIMIZERS},
    )
    # Pivotal tuning (train/pivotal.py)
    pivotal: bool = field(
        default=False,
        metadata={"help": "Pivotal tuning: the identifier becomes new tokens whose text-encoder "
                          "embedding trains with the LoRA (faces, unusual subjects)."},
    )
    pivotal_tokens: int = field(
        default=2, metadata={"help": "New tokens standing for the identifier (1-8)."}
    )
    pivotal_lr: float = field(
        default=5e-4, metadata={"help": "Learning rate of the new tokens' embedding."}
    )
    pivotal_stop: float = field(
        default=1.0,
        metadata={"help": "Fraction of the steps during which the embedding trains; after "
                          "it only the LoRA does (0-1]."},
    )
    # Loss-side methods: prior prediction, min-SNR weighting, offset noise, face weighting.
    prior_mode: str = field(
        default="class_images",
        metadata={"help": "Prior preservation from 'class_images' (generated first) or "
                          "'prediction' (the base model's own prediction for the class "
                          "prompt: no class images, one more forward pass per step).",
                  "choices": PRIOR_MODES},
    )
    min_snr_gamma: float | None = field(
        default=None,
        metadata={"help": "Min-SNR-gamma loss weighting (e.g. 5): steadier, often faster "
                          "training; off when not given."},
    )
    noise_offset: float = field(
        default=0.0,
        metadata={"help": "Offset-noise strength (e.g. 0.05): lets the LoRA learn very "
                          "dark or bright images; 0 = off."},
    )
    face_loss_weight: float = field(
        default=1.0,
        metadata={"help": "Loss weight inside the face box found at crop time."},
    )
    face_outside_weight: float = field(
        default=1.0,
        metadata={"help": "Loss weight outside the face box (e.g. 0.3 to spend the LoRA "
                          "on the face; 1 and 1 = off)."},
    )

    def __post_init__(self):
        self.instance_dir = as_path(self.instance_dir)
        self.output_dir = as_path(self.output_dir)
        self.class_dir = as_path(self.class_dir)
        if self.class_prompt is not None and not self.class_prompt.strip():
            self.class_prompt = None
        check(self.instance_dir is not None, "An instance folder (the subject's photos) is needed.")
        check(self.output_dir is not None, "An output folder for the LoRA is needed.")
        check(bool(self.instance_prompt.strip()),
               "The instance prompt is empty; use e.g. 'a photo of sks dog'.")
        check_not_a_file(self.output_dir, "Output folder", "--output")
        check_not_a_file(self.class_dir, "Class image folder", "--class-dir")
        check(self.steps >= 1, f"steps must be at least 1 (got {self.steps}).")
        check_seed(self.seed)
        check(self.lr_warmup_steps >= 0,
              f"warm-up steps must be >= 0 (got {self.lr_warmup_steps}); 0 means no warm-up.")
        check(self.learning_rate > 0, f"learning rate must be > 0 (got {self.learning_rate}).")
        check(self.text_encoder_lr > 0,
               f"text-encoder learning rate must be > 0 (got {self.text_encoder_lr}).")
        check(self.text_encoder_2_lr is None or self.text_encoder_2_lr > 0,
              f"text-encoder 2 learning rate must be > 0, or unset for the text-encoder "
              f"one (got {self.text_encoder_2_lr}).")
        check(1 <= self.rank <= 256, f"rank must be between 1 and 256 (got {self.rank}).")
        if self.lora_alpha == 0:
            self.lora_alpha = None  # the form's 0 and an unset alpha both mean "the rank"
        check(self.lora_alpha is None or 1 <= self.lora_alpha <= 1024,
              f"LoRA alpha must be between 1 and 1024, or unset for the rank "
              f"(got {self.lora_alpha}).")
        check(self.optimizer in OPTIMIZERS,
              f"optimizer must be one of {OPTIMIZERS} (got {self.optimizer!r}).")
        # The older switch (run settings, --use-8bit-adam) and the choice say the same.
        if self.use_8bit_adam and self.optimizer == "adamw":
            self.optimizer = "adamw8bit"
        check(not self.use_8bit_adam or self.optimizer == "adamw8bit",
              f"8-bit Adam is on but the optimizer is {self.optimizer!r}: turn one off.")
        self.use_8bit_adam = self.optimizer == "adamw8bit"
        # Said before any model loads; the optimizer's own import says it too (setup.py).
        check(self.optimizer != "prodigy" or find_spec("prodigyopt") is not None,
              PRODIGY_MISSING)
        check(64 <= self.resolution <= 2048 and self.resolution % 8 == 0,
               f"resolution must be a multiple of 8 between 64 and 2048 (got {self.resolution}).")
        check(self.batch_size >= 1, f"batch size must be at least 1 (got {self.batch_size}).")
        check(self.prior_loss_weight >= 0,
               f"prior loss weight must be >= 0 (got {self.prior_loss_weight}).")
        check(self.num_class_images >= 1,
               f"number of class images must be at least 1 (got {self.num_class_images}).")
        check(self.mixed_precision in MIXED_PRECISION_CHOICES,
               f"mixed precision must be one of {MIXED_PRECISION_CHOICES}.")
        check(self.lr_scheduler in LR_SCHEDULERS,
               f"learning-rate schedule must be one of {LR_SCHEDULERS}.")
        check(self.checkpoint_every >= 0 and self.validation_every >= 0,
               "checkpoint and validation intervals must be >= 0 (0 turns them off).")
        check(self.keep_checkpoints >= 1, "keep at least 1 checkpoint.")
        check(1 <= self.num_validation_images <= 8, "validation images must be 1-8.")
        check(1 <= self.score_images <= 8,
              f"images per scored checkpoint must be 1-8 (got {self.score_images}).")
        check(not self.score_checkpoints or self.checkpoint_every > 0,
              "Scoring checkpoints needs checkpoints: set checkpoint_every (Checkpoint every) "
              "above 0, or turn checkpoint scoring off.")
        check(1 <= self.pivotal_tokens <= 8,
              f"pivotal tokens must be 1-8 (got {self.pivotal_tokens}).")
        check(self.pivotal_lr > 0, f"pivotal learning rate must be > 0 (got {self.pivotal_lr}).")
        check(0 < self.pivotal_stop <= 1,
              f"the pivotal stop must be a fraction in (0, 1] (got {self.pivotal_stop}).")
        check(self.prior_mode in PRIOR_MODES,
              f"prior mode must be one of {PRIOR_MODES} (got {self.prior_mode!r}).")
        check(self.min_snr_gamma is None or self.min_snr_gamma > 0,
              f"min-SNR gamma must be > 0 (got {self.min_snr_gamma}); leave it out for off.")
        check(0 <= self.noise_offset <= 1,
              f"noise offset must be 0-1 (got {self.noise_offset}); 0.05 is typical.")
        check(self.face_loss_weight >= 0 and self.face_outside_weight >= 0,
              "face loss weights must be >= 0 (got "
              f"{self.face_loss_weight} inside, {self.face_outside_weight} outside).")
        check(self.face_loss_weight > 0 or self.face_outside_weight > 0,
              "face loss weights are both 0: nothing would be learned; use e.g. 1 inside "
              "and 0.3 outside.")
        if self.with_prior_preservation:
            # Prior prediction draws no class images: a class folder is not needed.
            check(self.class_dir is not None or not self.uses_class_images,
                   "Prior preservation needs a class folder (--class-dir) to keep class images.")
            refuse_identifier_in_class_prompt(self.instance_prompt, self.class_prompt)
        elif self.class_dir is not None:
            raise InputError(
                "A class folder was given without a class prompt: add --class-prompt "
                "(e.g. 'a photo of dog') to use prior preservation, or drop --class-dir."
            )

    @property
    def alpha(self) -> int:
        """The LoRA alpha trained with: the setting, else the rank."""
        return self.lora_alpha or self.rank

    @property
    def with_prior_preservation(self) -> bool:
        return self.class_prompt is not None

    @property
    def uses_class_images(self) -> bool:
        """Prior preservation that trains on class images (not on the base's prediction)."""
        return self.with_prior_preservation and self.prior_mode == "class_images"

    @property
    def face_weighted(self) -> bool:
        return (self.face_loss_weight, self.face_outside_weight) != (1.0, 1.0)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}
