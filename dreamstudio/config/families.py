"""The defaults that differ per base model family: the one home of SDXL's numbers.

TrainConfig and GenerateConfig hold SD 1.x's defaults (the notebook this app replaces);
SD 2.x shares them. A family listed here replaces those fields where the user gave no value
(the CLI's flags and the app's fields start from them); every other field keeps its
TrainConfig / GenerateConfig default.
"""

from __future__ import annotations

from ..core.families import FAMILY_NAMES, SD1, SDXL, source_family
from ..errors import DreamStudioError

# SDXL base 1.0 was trained at 1024 px: smaller images train a LoRA on sizes the model
# rarely saw (SDXL's size conditioning then also asks for a small picture).
SDXL_RESOLUTION = 1024

TRAIN_DEFAULTS: dict[str, dict] = {
    SDXL: {
        "resolution": SDXL_RESOLUTION,
        # SDXL's UNet (2.6 B parameters) is about 3x SD 1.5's, so the same rate moves its
        # pictures further per step; diffusers' SDXL DreamBooth LoRA example trains the
        # UNet at 1e-4, a fifth of SD 1.x's notebook rate (5e-4).
        "learning_rate": 1e-4,
        # SDXL's two text encoders drift quickly (the prompt's other words start to drag
        # the subject in): a tenth of the UNet's rate, shared by both encoders.
        "text_encoder_lr": 1e-5,
        # At a fifth of the rate a run needs more steps than SD 1.x's 300 to learn the
        # subject. 500 is a judgement, not a measurement on SDXL's real weights (none
        # are offline here): checkpoints and checkpoint scoring show whether more help.
        "steps": 500,
    },
}
GENERATE_DEFAULTS: dict[str, dict] = {
    SDXL: {
        # SDXL is sharpest at its training size; diffusers' SDXL pipeline draws at
        # guidance 5 by default, where SD 1.x's 7.5 over-saturates SDXL's colours.
        "height": SDXL_RESOLUTION,
        "width": SDXL_RESOLUTION,
        "guidance": 5.0,
    },
}


def family_of(model: str, model_config_dir: str | None = None) -> str:
    """The family of a base model reference, SD 1.x where it cannot be read now (the model
    loader says why when it loads)."""
    try:
        return source_family(model, model_config_dir)
    except (DreamStudioError, OSError, ValueError):
        return SD1


def family_name(family: str) -> str:
    """'SDXL', 'SD 1.x', 'SD 2.x': how the UI and the CLI name a family."""
    return FAMILY_NAMES.get(family, family)


def train_defaults(family: str) -> dict:
    """TrainConfig fields whose default `family` replaces (empty: TrainConfig's own)."""
    return dict(TRAIN_DEFAULTS.get(family, {}))


def generate_defaults(family: str) -> dict:
    """GenerateConfig fields whose default `family` replaces (empty: GenerateConfig's own)."""
    return dict(GENERATE_DEFAULTS.get(family, {}))
