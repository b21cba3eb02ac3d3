"""X/Y grids: one image per combination of two settings, same seed, in one labelled picture.

This is how a subject LoRA is tuned: vary the UNet and text-encoder LoRA scales (or the
guidance, steps, seed or sampler) and compare side by side. Every cell goes through the
same cached Generator, so the model and the LoRA load once for the whole grid.

axes: the settings an axis can vary and A1111's value-list syntax; draw: the labelled
picture; build: generating the cells and saving the grid.
"""

from .axes import (
    AXES,
    LORA_AXES,
    MAX_CELLS,
    NO_AXIS,
    AxisKind,
    GridAxis,
    GridConfig,
    format_value,
    parse_values,
)
from .build import GridProgress, GridResult, run_grid
from .draw import draw_grid

__all__ = [
    "AXES", "LORA_AXES", "MAX_CELLS", "NO_AXIS", "AxisKind", "GridAxis", "GridConfig",
    "GridProgress", "GridResult", "draw_grid", "format_value", "parse_values", "run_grid",
]
