"""Training presets: starting points that fill the Train tab, each with when to use it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import MIN_SNR_GAMMA, TrainConfig, default_of

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
