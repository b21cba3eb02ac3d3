"""PrepareConfig: how photos become square training crops."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .checks import check, is_int

CROP_MODES = ("face", "object")


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
        check(is_int(self.size) and 64 <= self.size <= 2048 and self.size % 8 == 0,
              f"Crop size {self.size!r} is not usable: it must be a whole number of pixels "
              "from 64 to 2048 and a multiple of 8 (Stable Diffusion's latent grid). "
              "Use 512 for SD 1.x or 1024 for SDXL.")
        margin = self.face_margin
        is_number = isinstance(margin, int | float) and not isinstance(margin, bool)
        check(is_number and math.isfinite(margin) and margin >= 1.0,
              f"Face margin {margin!r} is not usable: it must be a number >= 1.0 "
              "(1.0 = just the face, 2.2 = head and shoulders).")
        check(self.min_side is None or (is_int(self.min_side) and self.min_side >= 1),
              f"Minimum photo side {self.min_side!r} is not usable: give a positive whole "
              "number of pixels, or leave it empty to use half the crop size.")

    @property
    def min_short_side(self) -> int:
        """The effective minimum shorter side (resolved here, not in __post_init__, so that
        dataclasses.replace(config, size=...) keeps following the new size)."""
        return self.min_side if self.min_side is not None else self.size // 2
