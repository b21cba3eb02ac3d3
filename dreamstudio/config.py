"""Typed settings for training and generation, shared by the CLI, the app and tests.

These fields are the one home of every default: the CLI builds its options from them, the
app's widgets start from them (`default_of`). Training defaults are those of the LoRA
DreamBooth notebook this app replaces, without prior preservation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from .core.architectures import ARCHITECTURES
from .core.models import DEFAULT_MODEL
from .errors import InputError
from .evaluate.scorers import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL
from .generate.samplers import DEFAULT_SAMPLER, SAMPLER_NAMES
from .train.identifiers import refuse_identifier_in_class_prompt

MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")
GENERATE_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CROP_MODES = ("face", "object")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
# Seeds past 2**63 overflow torch's generators; below it, the per-image and per-process
# offsets added to a seed stay within what torch.manual_seed takes (up to 2**64 - 1).
MAX_SEED = 2**63 - 1


def check(condition: bool, message: str) -> None:
    """Raise InputError(message) unless `condition`: the one-line validation of configs."""
    if not condition:
        raise InputError(message)


def check_seed(seed: int) -> None:
    check(0 <= seed <= MAX_SEED,
          f"seed must be a whole number from 0 to {MAX_SEED} (got {seed}).")


def check_not_a_file(path: Path | None, what: str, flag: str) -> None:
    """Refuse a folder setting that names an existing file: making it fails later, obscurely."""
    check(path is None or not path.exists() or path.is_dir(),
          f"{what} {path} is a file, not a folder: give {flag} a folder path (it is "
          "created if missing).")


def default_of(config_class: type, name: str):
    """The default of field `name` of a config dataclass, for callers that need it before
    they have a config (a widget, a CLI option): so that no default is ever written twice."""
    for spec in dataclasses.fields(config_class):
        if spec.name != name:
            continue
        if spec.default is not dataclasses.MISSING:
            return spec.default
        if spec.default_factory is not dataclasses.MISSING:
            return spec.default_factory()
        raise ValueError(f"{config_class.__name__}.{name} has no default")
    raise KeyError(f"{config_class.__name__} has no field {name!r}")


def as_path(value) -> Path | None:
    return None if value in (None, "") else Path(value).expanduser()


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
    train_text_encoder: bool = field(
        default=True, metadata={"help": "Also train a LoRA on the text encoder."}
    )
    rank: int = field(default=4, metadata={"help": "LoRA rank (alpha equals rank)."})
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
        default=False, metadata={"help": "8-bit AdamW from bitsandbytes (CUDA): less memory."}
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
    model_config_dir: str | None = field(
        default=None,
        metadata={"help": "A single-file checkpoint's architecture: "
                          f"{', '.join(ARCHITECTURES)} or a diffusers folder with its configs "
                          "(default: read from the checkpoint)."},
    )
    device: str | None = field(
        default=None, metadata={"help": "Force a device ('cpu', 'cuda', 'mps')."}
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
        check(1 <= self.rank <= 256, f"rank must be between 1 and 256 (got {self.rank}).")
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
        if self.with_prior_preservation:
            check(self.class_dir is not None,
                   "Prior preservation needs a class folder (--class-dir) to keep class images.")
            refuse_identifier_in_class_prompt(self.instance_prompt, self.class_prompt)
        elif self.class_dir is not None:
            raise InputError(
                "A class folder was given without a class prompt: add --class-prompt "
                "(e.g. 'a photo of dog') to use prior preservation, or drop --class-dir."
            )

    @property
    def with_prior_preservation(self) -> bool:
        return self.class_prompt is not None

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


@dataclass
class GenerateConfig:
    prompt: str = field(metadata={"help": "What to draw, e.g. 'a photo of sks dog on a beach'."})
    lora_dir: Path | None = field(
        default=None, metadata={"help": "Folder of a trained LoRA; None for the base model."}
    )
    negative_prompt: str = field(default="", metadata={"help": "What to avoid."})
    unet_scale: float = field(default=1.0, metadata={"help": "UNet LoRA strength, 0-2."})
    text_encoder_scale: float = field(
        default=1.0, metadata={"help": "Text-encoder LoRA strength, 0-2."}
    )
    guidance: float = field(default=7.5, metadata={"help": "Classifier-free guidance, 1-20."})
    steps: int = field(default=30, metadata={"help": "Sampler steps."})
    seed: int = field(default=0, metadata={"help": "Seed of the first image; +1 per image."})
    num_images: int = field(default=1, metadata={"help": "Images to generate."})
    height: int | None = field(default=None, metadata={"help": "Height; model default if None."})
    width: int | None = field(default=None, metadata={"help": "Width; model default if None."})
    sampler: str = field(
        default=DEFAULT_SAMPLER,
        metadata={"help": f"Sampler: {', '.join(SAMPLER_NAMES)} (Default: the model's own).",
                  "choices": SAMPLER_NAMES},
    )
    precision: str = field(
        default="auto",
        metadata={"help": "Number format of the model while drawing: 'auto' (bf16 on CPUs "
                          "and GPUs with bf16 units, fp16 on older GPUs, else fp32), or force "
                          "'fp32' (full precision), 'bf16' or 'fp16'.",
                  "choices": GENERATE_PRECISIONS},
    )
    # What is shown while drawing, not how the image is made: left out of to_dict (the
    # PNG's parameters), since the same image comes out with any of these.
    preview_every: int = field(
        default=5,
        metadata={"help": "Show the image forming every N sampler steps (0 = no previews).",
                  "display_only": True},
    )
    preview_decoder: Path | None = field(
        default=None,
        metadata={"help": "Folder of a small preview decoder (diffusers AutoencoderTiny, "
                          "e.g. TAESD) for sharper previews; default: a colour approximation.",
                  "display_only": True},
    )

    def __post_init__(self):
        self.lora_dir = as_path(self.lora_dir)
        check(self.precision in GENERATE_PRECISIONS,
              f"Unknown precision '{self.precision}'; choose one of "
              f"{', '.join(GENERATE_PRECISIONS)}.")
        self.preview_decoder = as_path(self.preview_decoder)
        check(bool(self.prompt.strip()), "The prompt is empty.")
        check(self.sampler in SAMPLER_NAMES,
               f"Unknown sampler '{self.sampler}'; choose one of {', '.join(SAMPLER_NAMES)}.")
        check(0 <= self.unet_scale <= 2, f"UNet LoRA scale must be 0-2 (got {self.unet_scale}).")
        check(0 <= self.text_encoder_scale <= 2,
               f"text-encoder LoRA scale must be 0-2 (got {self.text_encoder_scale}).")
        check(1 <= self.guidance <= 20, f"guidance must be 1-20 (got {self.guidance}).")
        check(1 <= self.steps <= 200, f"steps must be 1-200 (got {self.steps}).")
        check(1 <= self.num_images <= 16, f"number of images must be 1-16 (got {self.num_images}).")
        check_seed(self.seed)
        for name in ("height", "width"):
            value = getattr(self, name)
            check(value is None or (64 <= value <= 2048 and value % 8 == 0),
                   f"{name} must be a multiple of 8 between 64 and 2048 (got {value}).")
        check(0 <= self.preview_every <= 200,
              f"preview cadence must be 0-200 steps (got {self.preview_every}); 0 turns "
              "previews off.")
        check(self.preview_decoder is None or self.preview_decoder.is_dir(),
              f"Preview decoder {self.preview_decoder} is not a folder: give the folder of "
              "a diffusers AutoencoderTiny (e.g. TAESD), or leave it empty.")

    def to_dict(self) -> dict:
        """The settings that make the image (what a PNG records)."""
        shown = {f.name for f in dataclasses.fields(self) if f.metadata.get("display_only")}
        data = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()
                if k not in shown}


@dataclass
class PrepareConfig:
    """How photos become square training crops."""

    mode: str = field(
        default="face",
        metadata={"help": "face: centre on the most prominent face; object: centre crop.",
                  "choices": CROP_MODES},
    )
    size: int = field(default=512, metadata={"help": "Side of the square crops (px)."})
    face_margin: float = field(
        default=2.2,
        # 2.2 frames the whole head and some shoulders, which DreamBooth needs to learn hair
        # and head shape.
        metadata={"help": "Crop side as a multiple of the face box (head and shoulders)."},
    )
    min_side: int | None = field(
        default=None,
        metadata={"help": "Reject photos whose shorter side is below this (px); "
                          "default: half the crop size, i.e. at most 2x upscaling."},
    )
    hold_out: bool = field(
        default=True,
        metadata={"help": "Keep one photo in six (with 6 or more) for scoring only: never "
                          "trained on, it is what evaluation compares against."},
    )

    def __post_init__(self) -> None:
        check(self.mode in CROP_MODES,
              f"Crop mode {self.mode!r} is not known. Choose 'face' for a person "
              "or 'object' for anything else.")
        check(_is_int(self.size) and 64 <= self.size <= 2048 and self.size % 8 == 0,
              f"Crop size {self.size!r} is not usable: it must be a whole number of pixels "
              "from 64 to 2048 and a multiple of 8 (Stable Diffusion's latent grid). "
              "Use 512 for SD 1.x or 1024 for SDXL.")
        margin = self.face_margin
        is_number = isinstance(margin, int | float) and not isinstance(margin, bool)
        check(is_number and math.isfinite(margin) and margin >= 1.0,
              f"Face margin {margin!r} is not usable: it must be a number >= 1.0 "
              "(1.0 = just the face, 2.2 = head and shoulders).")
        check(self.min_side is None or (_is_int(self.min_side) and self.min_side >= 1),
              f"Minimum photo side {self.min_side!r} is not usable: give a positive whole "
              "number of pixels, or leave it empty to use half the crop size.")

    @property
    def min_short_side(self) -> int:
        """The effective minimum shorter side (resolved here, not in __post_init__, so that
        dataclasses.replace(config, size=...) keeps following the new size)."""
        return self.min_side if self.min_side is not None else self.size // 2


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
