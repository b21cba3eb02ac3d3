"""GenerateConfig: what one Generate press draws."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..generate.samplers import DEFAULT_SAMPLER, SAMPLER_NAMES
from .checks import as_path, check, check_seed

GENERATE_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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
