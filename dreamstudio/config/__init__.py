"""Typed settings for training and generation, shared by the CLI, the app and tests.

These fields are the one home of every default: the CLI builds its options from them, the
app's widgets start from them (`default_of`). Training defaults are those of the LoRA
DreamBooth notebook this app replaces, without prior preservation.
"""

from .checks import MAX_SEED, as_path, check, check_not_a_file, check_seed, default_of
from .generate import GENERATE_PRECISIONS, GenerateConfig
from .prepare import CROP_MODES, PrepareConfig
from .train import (
    LR_SCHEDULERS,
    MIN_SNR_GAMMA,
    MIXED_PRECISION_CHOICES,
    OPTIMIZERS,
    PRIOR_MODES,
    TrainConfig,
)

__all__ = [
    "CROP_MODES", "GENERATE_PRECISIONS", "LR_SCHEDULERS", "MAX_SEED", "MIN_SNR_GAMMA",
    "MIXED_PRECISION_CHOICES", "OPTIMIZERS", "PRIOR_MODES", "GenerateConfig", "PrepareConfig",
    "TrainConfig", "as_path", "check", "check_not_a_file",
    "check_seed", "default_of",
]
