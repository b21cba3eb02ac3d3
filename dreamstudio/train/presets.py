"""Training presets: starting points that fill the Train tab, each with when to use it.

Each base model family has its own (presets_for): SDXL's start from its defaults in
config/families.py, never from SD 1.x's notebook rates."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import MIN_SNR_GAMMA, TrainConfig, default_of
from ..config.families import SDXL, train_defaults

# The settings a preset fills in; the rest of the Train tab keeps what the user set.
_PRESET_KEYS = ("steps", "learning_rate", "text_encoder_lr", "batch_size", "rank",
                "train_text_encoder", "class_prompt", "prior_loss_weight", "num_class_images",
                "prior_mode", "min_snr_gamma", "face_loss_weight", "face_outside_weight",
                "use_dora", "pivotal")

# TrainConfig's own defaults are the notebook's: read them, never restate them.
_DEFAULTS = {k: default_of(TrainConfig, k) for k in _PRESET_KEYS}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    settings: dict = field(default_factory=dict)


def _rate(value: float) -> str:
    """A learning rate as people write it: 5e-4, 1.5e-4."""
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _notebook_preset() -> Preset:
    d = _DEFAULTS
    return Preset(
        "LoRA notebook defaults",
        "The settings of the LoRA DreamBooth "
        f"notebook this app replaces (UNet LR {_rate(d['learning_rate'])}, text-encoder LR "
        f"{_rate(d['text_encoder_lr'])}, {d['steps']} steps, batch {d['batch_size']}, rank "
        f"{d['rank']}), without prior preservation. Fast, and usually enough.",
        dict(d),
    )


def _pet_preset() -> Preset:
    return Preset(
        "Object / pet",
        "For an object or a pet: the notebook's settings with min-SNR weighting on, which "
        "costs nothing per step and steadies the loss over the noise levels; prior "
        "preservation stays off (turn on 'the base model's prediction' with your class "
        "prompt if the Tune tab's leak check flags the LoRA).",
        _DEFAULTS | {"min_snr_gamma": MIN_SNR_GAMMA},
    )


def _face_preset() -> Preset:
    return Preset(
        "Person / face",
        "For a person from face crops (the Data tab's face mode): prior preservation on "
        "'a photo of a person' from the base model's own prediction (no class images to "
        "draw first) keeps the model's other people intact, the face-weighted loss (half "
        "weight outside the face box) spends the LoRA on the face rather than clothes and "
        "background, min-SNR weighting steadies the loss, and more steps at a lower UNet LR "
        "learn the identity without copying the photos. Pivotal tuning is left off: its "
        "gain could not be measured without real weights.",
        _DEFAULTS | {"steps": 800, "learning_rate": 2e-4, "text_encoder_lr": 5e-5, "rank": 8,
                     "class_prompt": "a photo of a person", "prior_mode": "prediction",
                     "face_outside_weight": 0.5, "min_snr_gamma": MIN_SNR_GAMMA},
    )


PRESETS: dict[str, Preset] = {p.name: p for p in (_notebook_preset(), _pet_preset(),
                                                  _face_preset())}

# SDXL's own defaults (1024 px, UNet LR 1e-4, text-encoder LR 1e-5): what its presets start
# from. The resolution is no preset setting: the Train tab keeps the model's 1024 px.
_SDXL = _DEFAULTS | {k: v for k, v in train_defaults(SDXL).items() if k in _PRESET_KEYS}


def _sdxl_preset() -> Preset:
    d = _SDXL
    return Preset(
        "SDXL defaults",
        f"SDXL's starting point: UNet LR {_rate(d['learning_rate'])} (diffusers' SDXL "
        f"DreamBooth LoRA rate; SDXL's UNet is about 3x SD 1.5's), text-encoder LR "
        f"{_rate(d['text_encoder_lr'])} for both text encoders (they drift quickly), "
        f"{d['steps']} steps, batch {d['batch_size']}, rank {d['rank']}, at the model's "
        "1024 px; no prior preservation.",
        dict(d),
    )


def _sdxl_pet_preset() -> Preset:
    return Preset(
        "SDXL object / pet",
        "For an object or a pet on SDXL: SDXL's defaults (1024 px, its learning rates) with "
        "min-SNR weighting on, which costs nothing per step and steadies the loss over the "
        "noise levels; prior preservation stays off.",
        _SDXL | {"min_snr_gamma": MIN_SNR_GAMMA},
    )


def _sdxl_face_preset() -> Preset:
    return Preset(
        "SDXL person / face",
        "For a person from face crops on SDXL, at 1024 px: prior preservation on 'a photo "
        "of a person' from the base model's own prediction, the face-weighted loss (half "
        "weight outside the face box), min-SNR weighting, and more steps at half of SDXL's "
        "learning rates (UNet 5e-5, both text encoders 5e-6), as the SD 1.x face preset "
        "lowers its own. Pivotal tuning is left off: its gain could not be measured without "
        "real weights.",
        _SDXL | {"steps": 800, "learning_rate": 5e-5, "text_encoder_lr": 5e-6, "rank": 8,
                 "class_prompt": "a photo of a person", "prior_mode": "prediction",
                 "face_outside_weight": 0.5, "min_snr_gamma": MIN_SNR_GAMMA},
    )


SDXL_PRESETS: dict[str, Preset] = {p.name: p for p in (
    _sdxl_preset(), _sdxl_pet_preset(), _sdxl_face_preset())}


def presets_for(family: str) -> dict[str, Preset]:
    """The Train tab's presets for a base model of `family` (SD 1.x and 2.x share theirs)."""
    return SDXL_PRESETS if family == SDXL else PRESETS
