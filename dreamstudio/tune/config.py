"""What a sweep tries and how it judges: TuneConfig, every default of the Tune stage once.

A sweep draws the same prompts with the same seeds for every cell of candidates (the run's
final LoRA and any of its checkpoints) x UNet scales x text-encoder scales x guidance
values, plus the base model at each guidance value, and scores every cell. Its generation
settings that GenerateConfig also has take their help from there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..config import GenerateConfig, as_path, check, check_seed
from ..errors import InputError
from ..evaluate.faces import DEFAULT_FACE_WEIGHTS
from ..evaluate.metrics import DEFAULT_LEAK_MARGIN
from ..evaluate.prompts import KINDS, fill, infer_kind, is_person, templates_for, without_identifier
from ..evaluate.scorers import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL
from ..lora.files import read_lora_info
from ..train.identifiers import split_instance_prompt
from ..workspace.runs import load_run_settings

PROMPT_SETS = ("quick", "full")
FACE_CHOICES = ("auto", "on", "off")
# The quick set: four of the paper's prompts per kind, a scene, a second scene, an outfit
# or a landmark, and a restyle, so a sweep sees both context and appearance changes.
QUICK_TEMPLATES: dict[str, tuple[str, ...]] = {
    "live": ("a {0} {1} in the jungle", "a {0} {1} on the beach",
             "a {0} {1} wearing a santa hat", "a {0} {1} in a chef outfit"),
    "object": ("a {0} {1} in the jungle", "a {0} {1} on the beach",
               "a {0} {1} with the Eiffel Tower in the background", "a red {0} {1}"),
}
_GENERATE = {f.name: f for f in dataclasses.fields(GenerateConfig)}


def _like_generate(name: str, default=dataclasses.MISSING):
    source = _GENERATE[name]
    return field(default=source.default if default is dataclasses.MISSING else default,
                 metadata=source.metadata)


@dataclass
class TuneConfig:
    run_dir: Path = field(metadata={"help": "The training run's folder (loras/<run>/)."})
    real_images_dir: Path = field(
        metadata={"help": "The subject's prepared photos (held-out ones are used if any)."})
    candidates: list[str] | None = field(
        default=None,
        metadata={"help": "Which LoRAs to try: 'final' and checkpoint names such as "
                          "step-000100, or 'all'; default: the final LoRA (else the last "
                          "checkpoint)."})
    unet_scales: list[float] = field(default_factory=lambda: [0.6, 0.8, 1.0],
                                     metadata={"help": "UNet LoRA scales to try, 0-2."})
    text_encoder_scales: list[float] = field(
        default_factory=lambda: [0.5, 1.0],
        metadata={"help": "Text-encoder LoRA scales to try, 0-2."})
    guidances: list[float] = field(default_factory=lambda: [7.5],
                                   metadata={"help": "Guidance values to try, 1-20."})
    prompt_set: str = field(
        default="quick",
        metadata={"help": "quick: 4 of the paper's prompts for the subject's kind; full: "
                          "all 25.", "choices": PROMPT_SETS})
    images_per_prompt: int = field(
        default=1, metadata={"help": "Images per prompt in every cell (seeds seed, seed+1, ...)."})
    steps: int = field(default=20, metadata={"help": "Sampler steps per image."})
    seed: int = _like_generate("seed")
    height: int | None = _like_generate("height")
    width: int | None = _like_generate("width")
    negative_prompt: str = _like_generate("negative_prompt")
    sampler: str = _like_generate("sampler", "DPM++ 2M Karras")
    precision: str = _like_generate("precision")
    leak_images: int = field(
        default=2,
        metadata={"help": "Images of the class prompt without the identifier per cell, for "
                          "the leak check (0: no leak check)."})
    clip_t_tolerance: float = field(
        default=0.05,
        metadata={"help": "How far below the base model's CLIP-T a recommended cell may "
                          "fall, as a fraction (0.05 = 5%)."})
    leak_margin: float = field(
        default=DEFAULT_LEAK_MARGIN,
        metadata={"help": "How far a cell's leak may rise above the base model's before it "
                          "is flagged (DINO cosine)."})
    face_identity: str = field(
        default="auto",
        metadata={"help": "Score face identity: auto (for people), on or off.",
                  "choices": FACE_CHOICES})
    face_weights: str = field(
        default=DEFAULT_FACE_WEIGHTS,
        metadata={"help": "Face model weights: vggface2, casia-webface or a local file."})
    dino_model: str = field(default=DEFAULT_DINO_MODEL,
                            metadata={"help": "DINO ViT: Hub id or local folder."})
    clip_model: str = field(default=DEFAULT_CLIP_MODEL,
                            metadata={"help": "CLIP model: Hub id or local folder."})
    identifier: str | None = field(
        default=None, metadata={"help": "Identifier, e.g. sks; default: the run's."})
    class_noun: str | None = field(
        default=None, metadata={"help": "Class noun, e.g. dog; default: the run's."})
    kind: str | None = field(
        default=None,
        metadata={"help": "Prompt list: live or object; default: from the class noun.",
                  "choices": KINDS})
    leak_prompt: str | None = field(
        default=None,
        metadata={"help": "Class prompt without the identifier for the leak check; default: "
                          "the run's class prompt, else its instance prompt without the "
                          "identifier."})

    def __post_init__(self):
        self.run_dir = as_path(self.run_dir)
        self.real_images_dir = as_path(self.real_images_dir)
        check(self.run_dir is not None and self.run_dir.is_dir(),
              f"Run folder {self.run_dir} does not exist: pick a run that was trained.")
        check(self.real_images_dir is not None and self.real_images_dir.is_dir(),
              f"Photo folder {self.real_images_dir} does not exist: prepare the subject's "
              "photos on the Data tab first.")
        for name, low, high in (("unet_scales", 0.0, 2.0), ("text_encoder_scales", 0.0, 2.0),
                                ("guidances", 1.0, 20.0)):
            values = [float(v) for v in getattr(self, name)]
            label = name.replace("_", " ")
            check(bool(values), f"Give at least one value for the {label}.")
            for v in values:
                check(low <= v <= high, f"{label}: {v:g} is outside {low:g}-{high:g}.")
            # Duplicates would draw the same cell twice; order is the person's.
            setattr(self, name, list(dict.fromkeys(values)))
        check(1 <= self.images_per_prompt <= 8,
              f"images per prompt must be 1-8 (got {self.images_per_prompt}).")
        check(1 <= self.steps <= 150, f"sampler steps must be 1-150 (got {self.steps}).")
        check(0 <= self.leak_images <= 8,
              f"leak images must be 0-8 per cell (got {self.leak_images}).")
        check(0 <= self.clip_t_tolerance < 1,
              f"the CLIP-T tolerance is a fraction from 0 to 1, e.g. 0.05 for 5% (got "
              f"{self.clip_t_tolerance}).")
        check(self.leak_margin >= 0, f"the leak margin must be 0 or more (got {self.leak_margin}).")
        check_seed(self.seed)
        if self.candidates is not None:
            self.candidates = list(dict.fromkeys(c.strip() for c in self.candidates if c.strip()))
            check(bool(self.candidates), "Pick at least one LoRA of the run to try.")
        self._resolve_subject()
        if self.kind is None:
            self.kind = infer_kind(self.class_noun)
        check(self.kind in KINDS, f"kind must be 'object' or 'live' (got {self.kind!r}).")
        if self.leak_prompt is not None and not self.leak_prompt.strip():
            self.leak_prompt = None
        # The generation settings are GenerateConfig's: let it check them with its messages.
        self.generate_config(self.prompt_pairs()[0][0], None, 1.0, 1.0, self.guidances[0], 1)

    def _resolve_subject(self) -> None:
        settings = load_run_settings(self.run_dir)
        self._instance_prompt = settings.get("instance_prompt")
        self._class_prompt = settings.get("class_prompt")
        if self.identifier and self.class_noun:
            return
        if not self._instance_prompt:
            raise InputError(
                f"The run in {self.run_dir} has no saved training prompt, so its identifier "
                "and class noun are unknown: give them (e.g. --identifier sks --class-noun dog)."
            )
        identifier, class_noun = split_instance_prompt(
            self._instance_prompt, self.class_noun, self._class_prompt,
            identifier=self.identifier or read_lora_info(self.run_dir).get("identifier"))
        self.identifier = self.identifier or identifier
        self.class_noun = self.class_noun or class_noun

    @property
    def scores_faces(self) -> bool:
        return self.face_identity == "on" or (
            self.face_identity == "auto" and is_person(self.class_noun))

    def prompt_pairs(self) -> list[tuple[str, str]]:
        """(prompt to draw, prompt without the identifier for CLIP-T), in order."""
        templates = (QUICK_TEMPLATES[self.kind] if self.prompt_set == "quick"
                     else templates_for(self.kind))
        return [(fill(t, self.identifier, self.class_noun),
                 fill(without_identifier(t, self.identifier), self.identifier,
                      self.class_noun)) for t in templates]

    def class_prompt_text(self) -> str:
        """The leak check's prompt: the class with no identifier ('a photo of dog')."""
        if self.leak_prompt:
            return " ".join(self.leak_prompt.split())
        if self._class_prompt:
            return " ".join(self._class_prompt.split())
        return without_identifier(self._instance_prompt or f"a photo of {self.class_noun}",
                                  self.identifier)

    def generate_config(self, prompt: str, lora_dir: Path | None, unet_scale: float,
                        text_encoder_scale: float, guidance: float,
                        num_images: int) -> GenerateConfig:
        return GenerateConfig(
            prompt=prompt, lora_dir=lora_dir, negative_prompt=self.negative_prompt,
            unet_scale=unet_scale, text_encoder_scale=text_encoder_scale, guidance=guidance,
            steps=self.steps, seed=self.seed, num_images=num_images, height=self.height,
            width=self.width, sampler=self.sampler, precision=self.precision, preview_every=0,
        )

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}
