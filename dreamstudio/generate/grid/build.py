"""Making a grid: every cell through one cached Generator, then the labelled picture saved."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from ..eta import StepClock
from ..png_metadata import save_png_with_parameters
from .axes import GridConfig, format_value
from .draw import draw_grid

if TYPE_CHECKING:
    from ..generator import Generator
    from ..previews import PreviewFn


@dataclass
class GridProgress:
    done: int  # cells finished
    total: int
    step: int = 0  # sampler step within the cell being drawn
    steps: int = 0
    message: str = ""
    seconds_left: float | None = None  # None until the pace is known

    @property
    def fraction(self) -> float:
        within = self.step / self.steps if self.steps else 0.0
        return min(1.0, (self.done + within) / max(self.total, 1))


@dataclass
class GridResult:
    image: Image.Image  # the labelled grid (blank cells where a stopped grid has none)
    cells: list[list[Image.Image | None]]
    path: Path | None  # where it was saved; None when stopped or not asked to save
    status: str  # "completed" or "cancelled"
    done: int
    total: int
    seconds: float


def run_grid(
    generator: Generator,
    config: GridConfig,
    output_dir: Path | None = None,
    progress: Callable[[GridProgress], None] | None = None,
    cancel: threading.Event | None = None,
    preview: PreviewFn | None = None,
) -> GridResult:
    """Generate every cell with the same seed (unless the seed is an axis), row by row.

    A set `cancel` stops within the current sampler step; the cells finished so far are
    drawn, the interrupted one is left blank and nothing is saved. `preview` gets the
    cell being drawn as it forms, as Generator.generate gives it.
    """
    started = time.monotonic()
    emit = progress or (lambda p: None)
    rows, cols = config.shape
    total = rows * cols
    cells: list[list[Image.Image | None]] = [[None] * cols for _ in range(rows)]
    # Steps can be an axis: the time left is counted in steps over the whole grid.
    cell_steps = [config.cell_config(r, c).steps for r in range(rows) for c in range(cols)]
    clock = StepClock(sum(cell_steps))
    done = 0
    for row in range(rows):
        for col in range(cols):
            if cancel is not None and cancel.is_set():
                break
            cell = config.cell_config(row, col)
            message = f"Image {done + 1} of {total}"
            before = sum(cell_steps[:row * cols + col])
            emit(GridProgress(done, total, 0, cell.steps, message, clock.seconds_left))

            def on_step(step, steps, done=done, message=message, before=before):
                left = clock.tick(before + step)
                emit(GridProgress(done, total, step, steps, message, left))

            [result] = generator.generate(cell, None, on_step, cancel, preview)
            if cancel is not None and cancel.is_set():
                break  # the half-denoised cell stays blank
            cells[row][col] = result.image
            done += 1
        else:
            continue
        break
    status = "completed" if done == total else "cancelled"
    image = draw_grid(
        cells, config.x.label, [format_value(v) for v in config.x.values],
        config.y.label if config.y else None,
        [format_value(v) for v in config.y.values] if config.y else None,
        cell_size=(config.base.width or 64, config.base.height or 64),
    )
    path = None
    if output_dir is not None and status == "completed":
        size = cells[0][0].size
        params = generator.image_parameters(config.base, config.base.seed, size,
                                            generator.sampler_label(config.base.sampler))
        params["grid"] = config.to_dict()
        params["grid_size"] = list(image.size)
        path = save_png_with_parameters(
            image, Path(output_dir), params,
            stem=f"{time.strftime('%Y%m%d-%H%M%S')}_grid_seed{config.base.seed}",
        )
    emit(GridProgress(done, total, 0, 0, "Done" if status == "completed" else "Stopped"))
    return GridResult(image, cells, path, status, done, total, time.monotonic() - started)
