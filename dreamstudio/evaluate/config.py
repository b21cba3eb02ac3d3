"""What an evaluation scores, and how its images are generated: EvalConfig.

The generation settings it shares with GenerateConfig (guidance, seed, LoRA scales, size,
negative prompt) take their defaults and help from there; only the paper's own choices
(4 images per prompt, 50 sampler steps) are set here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..config import GenerateConfig, as_path, check
from ..errors import InputError
from ..lora.files import CONFIG_NAME, WEIGHTS_NAME, is_lora_dir, read_lora_info
from ..train.identifiers import split_instance_prompt
from .prompts import (
    KINDS,
    fill,
    infer_kind,
    templates_for,
    without_identifier,
)
from .scorers import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL

_GENERATE_FIELDS = {f.name: f for f in dataclasses.fields(GenerateConfig)}


def _as_in_generate(name: str):
    """A field with GenerateConfig's default and help for the setting of the same name."""
    source = _GENERATE_FIELDS[name]
    return field(default=source.default, metadata=source.metadata)


@dataclass
class EvalConfig:
    lora_dir: Path = field(metadata={"help": "Folder of the trained LoRA."})
    real_images_dir: Path = field(
        metadata={"help": "The subject's real photos (or the prepared crops)."}
    )
    identifier: str | None = field(
        default=None,
        metadata={"help": "Unique identifier, e.g. sks; default: from the LoRA's training "
                          "prompt."},
    )
    class_noun: str | None = field(
        default=None,
        metadata={"help": "Class noun, e.g. dog; default: from the LoRA's training prompt."},
    )
    kind: str | None = field(
        default=None,
        metadata={"help": "Prompt list; default: live for cats, dogs and people, else object.",
                  "choices": KINDS},
    )
    images_per_prompt: int = field(
        default=4,  # the paper: 4 images x 25 prompts per subject
        metadata={"help": "Images generated and scored per prompt."},
    )
    prompts: list[str] | None = field(
        default=None,
        metadata={"help": "Templates ({0} identifier, {1} class) or plain prompts; default: "
                          "the paper's 25 for the kind."},
    )
    num_prompts: int | None = field(
        default=None, metadata={"help": "Only the first N of the 25 prompts (quick runs)."}
    )
    steps: int = field(default=50, metadata={"help": "Sampler steps per image."})
    guidance: float = _as_in_generate("guidance")
    seed: int = _as_in_generate("seed")
    unet_scale: float = _as_in_generate("unet_scale")
    text_encoder_scale: float = _as_in_generate("text_encoder_scale")
    height: int | None = _as_in_generate("height")
    width: int | None = _as_in_generate("width")
    negative_prompt: str = _as_in_generate("negative_prompt")
    dino_model: str = field(
        default=DEFAULT_DINO_MODEL, metadata={"help": "DINO ViT: Hub id or local folder."}
    )
    clip_model: str = field(
        default=DEFAULT_CLIP_MODEL, metadata={"help": "CLIP model: Hub id or local folder."}
    )

    def __post_init__(self):
        self.lora_dir = as_path(self.lora_dir)
        self.real_images_dir = as_path(self.real_images_dir)
        check(self.lora_dir is not None, "A LoRA folder to evaluate is needed.")
        check(is_lora_dir(self.lora_dir),
               f"No LoRA found in {self.lora_dir}: it has no {WEIGHTS_NAME}. "
               "Train one first, or pick the folder the training wrote.")
        check(self.real_images_dir is not None and self.real_images_dir.is_dir(),
               f"Real photo folder {self.real_images_dir} does not exist; pass the folder of "
               "the subject's photos (or its prepared crops).")
        self._resolve_subject()
        if self.kind is None:
            self.kind = infer_kind(self.class_noun)
        check(self.kind in KINDS, f"kind must be 'object' or 'live' (got {self.kind!r}).")
        if self.prompts is not None:
            self.prompts = [p.strip() for p in self.prompts if p and p.strip()]
            check(bool(self.prompts), "The prompt list is empty; leave it unset to use the "
                                       "paper's 25 prompts.")
        check(self.num_prompts is None or self.num_prompts >= 1,
               f"number of prompts must be at least 1 (got {self.num_prompts}).")
        check(1 <= self.images_per_prompt <= 16,
               f"images per prompt must be 1-16 (got {self.images_per_prompt}).")
        for name in ("dino_model", "clip_model"):
            check(bool(str(getattr(self, name)).strip()), f"{name} is empty.")
        # The generation settings are GenerateConfig's: let it check them with its messages.
        self.generate_config(self.prompt_pairs()[0][0])

    def _resolve_subject(self) -> None:
        for name in ("identifier", "class_noun"):
            value = getattr(self, name)
            setattr(self, name, " ".join(value.split()) if value and value.strip() else None)
        if self.identifier and self.class_noun:
            return
        info = read_lora_info(self.lora_dir)
        train_config = info.get("config") or {}
        instance_prompt = train_config.get("instance_prompt")
        if not instance_prompt:
            raise InputError(
                f"The LoRA in {self.lora_dir} has no saved training prompt ({CONFIG_NAME} is "
                "missing or has none), so its identifier and class noun are unknown: give "
                "them explicitly (e.g. --identifier sks --class-noun dog)."
            )
        # The identifier the trainer recorded is the rare token it found with the tokenizer.
        identifier, class_noun = split_instance_prompt(
            instance_prompt, self.class_noun, train_config.get("class_prompt"),
            identifier=self.identifier or info.get("identifier"),
        )
        self.identifier = self.identifier or identifier
        self.class_noun = self.class_noun or class_noun

    def prompt_pairs(self) -> list[tuple[str, str]]:
        """(prompt to generate, prompt without the identifier for CLIP-T), in order."""
        templates = self.prompts if self.prompts is not None else list(templates_for(self.kind))
        if self.num_prompts is not None:
            templates = templates[: self.num_prompts]
        return [
            (fill(t, self.identifier, self.class_noun),
             fill(without_identifier(t, self.identifier), self.identifier, self.class_noun))
            for t in templates
        ]

    def generate_config(self, prompt: str) -> GenerateConfig:
        return GenerateConfig(
            prompt=prompt, lora_dir=self.lora_dir, negative_prompt=self.negative_prompt,
            unet_scale=self.unet_scale, text_encoder_scale=self.text_encoder_scale,
            guidance=self.guidance, steps=self.steps, seed=self.seed,
            num_images=self.images_per_prompt, height=self.height, width=self.width,
        )

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}
