"""X/Y grids: one image per combination of two settings, same seed, in one labelled picture.

This is how a subject LoRA is tuned: vary the UNet and text-encoder LoRA scales (or the
guidance, steps, seed or sampler) and compare side by side. Every cell goes through the
same cached Generator, so the model and the LoRA load once for the whole grid.

Value lists use AUTOMATIC1111's X/Y plot syntax, comma separated, items mixable:
    0, 0.5, 1           the values themselves
    0-1 (+0.25)         0, 0.25, 0.5, 0.75, 1   (from-to with a step)
    0-1 [5]             0, 0.25, 0.5, 0.75, 1   (from-to with a count, ends included)
    1-4                 1, 2, 3, 4              (from-to in steps of 1)
Samplers are listed by name: "Euler a, DDIM".
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

from ..config import GenerateConfig
from ..errors import InputError
from .png_metadata import save_png_with_parameters
from .samplers import SAMPLER_NAMES

if TYPE_CHECKING:
    from .generator import Generator

MAX_CELLS = 64
NO_AXIS = "none"


@dataclass(frozen=True)
class AxisKind:
    label: str  # as A1111 names it in the infotext, and as the grid's title shows it
    kind: type  # float, int or str
    low: float = 0
    high: float = 0


# The GenerateConfig field each axis varies -> how its values look and where they must lie.
AXES: dict[str, AxisKind] = {
    "unet_scale": AxisKind("LoRA UNet scale", float, 0, 2),
    "text_encoder_scale": AxisKind("LoRA text encoder scale", float, 0, 2),
    "guidance": AxisKind("CFG scale", float, 1, 20),
    "steps": AxisKind("Steps", int, 1, 200),
    "seed": AxisKind("Seed", int, 0, 2**32 - 1),
    "sampler": AxisKind("Sampler", str),
}
LORA_AXES = ("unet_scale", "text_encoder_scale")

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_RANGE = re.compile(
    rf"^{_NUM}\s*-\s*{_NUM}\s*(?:\(\s*([+-]?\s*(?:\d+(?:\.\d*)?|\.\d+))\s*\)|\[\s*(\d+)\s*\])?$"
)


def _format(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _expand_range(item: str, match: re.Match, label: str) -> list[float]:
    start, stop = float(match[1]), float(match[2])
    step_text, count_text = match[3], match[4]
    if count_text is not None:
        count = int(count_text)
        if count < 2:
            raise InputError(f"{label}: '{item}' asks for {count} value(s); a range needs "
                             "[2] or more (or write the single value).")
        if count > MAX_CELLS:
            raise InputError(f"{label}: '{item}' makes {count} values; at most {MAX_CELLS}.")
        return [start + (stop - start) * i / (count - 1) for i in range(count)]
    step = float(step_text.replace(" ", "")) if step_text else (1.0 if stop >= start else -1.0)
    if step == 0 or (stop - start) * step < 0:
        raise InputError(f"{label}: the step of '{item}' never gets from {start:g} to "
                         f"{stop:g}; use e.g. '{start:g}-{stop:g} (+0.25)'.")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_CELLS:
        raise InputError(f"{label}: '{item}' makes {count} values; at most {MAX_CELLS}. "
                         "Use a larger step.")
    return [start + step * i for i in range(count)]


def parse_values(axis: str, text: str) -> list:
    """The values an axis text stands for, checked against the setting's limits."""
    if axis not in AXES:
        raise InputError(f"Unknown grid axis '{axis}'; choose one of {', '.join(AXES)}.")
    spec = AXES[axis]
    items = [item.strip() for item in (text or "").split(",") if item.strip()]
    if not items:
        raise InputError(f"{spec.label}: no values given; type e.g. "
                         f"{'Euler a, DDIM' if spec.kind is str else '0, 0.5, 1'}.")
    if spec.kind is str:
        by_lower = {name.lower(): name for name in SAMPLER_NAMES}
        unknown = [item for item in items if item.lower() not in by_lower]
        if unknown:
            raise InputError(f"Sampler: unknown name(s) {', '.join(unknown)}; use any of "
                             f"{', '.join(SAMPLER_NAMES)}.")
        values: list = [by_lower[item.lower()] for item in items]
    else:
        numbers: list[float] = []
        for item in items:
            match = _RANGE.match(item)
            if match:
                numbers += _expand_range(item, match, spec.label)
                continue
            try:
                numbers.append(float(item))
            except ValueError:
                raise InputError(
                    f"{spec.label}: '{item}' is not a number or a range. Write values like "
                    "'0, 0.5, 1', '0-1 (+0.25)' or '0-1 [5]'."
                ) from None
            if len(numbers) > MAX_CELLS:
                break
        values = []
        for number in numbers:
            number = round(number, 6)  # 0.1 + 0.2 steps should read 0.3, not 0.30000000000000004
            if spec.kind is int:
                if number != int(number):
                    raise InputError(f"{spec.label} values must be whole numbers "
                                     f"(got {number:g}).")
                number = int(number)
            if not spec.low <= number <= spec.high:
                raise InputError(f"{spec.label} values must be {spec.low:g}-{spec.high:g} "
                                 f"(got {_format(number)}).")
            values.append(number)
    if len(values) > MAX_CELLS:
        raise InputError(f"{spec.label}: {len(values)} values; a grid has at most "
                         f"{MAX_CELLS} images.")
    return values


@dataclass
class GridAxis:
    name: str  # a GenerateConfig field, one of AXES
    values: list = field(default_factory=list)

    def __post_init__(self):
        if self.name not in AXES:
            raise InputError(f"Unknown grid axis '{self.name}'; choose one of "
                             f"{', '.join(AXES)}.")
        if not self.values:
            raise InputError(f"The {self.label} axis has no values.")

    @classmethod
    def parse(cls, name: str, text: str) -> GridAxis:
        return cls(name, parse_values(name, text))

    @property
    def label(self) -> str:
        return AXES[self.name].label

    @property
    def text(self) -> str:
        return ", ".join(_format(v) for v in self.values)

    def to_dict(self) -> dict:
        return {"axis": self.name, "label": self.label, "values": list(self.values)}


@dataclass
class GridConfig:
    base: GenerateConfig  # every other setting; its num_images is ignored (one per cell)
    x: GridAxis
    y: GridAxis | None = None  # None: a single row

    def __post_init__(self):
        if self.y is not None and self.y.name == self.x.name:
            raise InputError(f"Both axes vary the {self.x.label}; pick two different settings "
                             "(or no Y axis).")
        cells = len(self.x.values) * (len(self.y.values) if self.y else 1)
        if cells > MAX_CELLS:
            raise InputError(f"This grid has {cells} images ({len(self.x.values)} x "
                             f"{len(self.y.values) if self.y else 1}); at most {MAX_CELLS}. "
                             "Use fewer values.")
        for axis in self.axes:
            if axis.name in LORA_AXES and self.base.lora_dir is None:
                raise InputError(f"The grid varies the {axis.label}, but no LoRA is picked: "
                                 "choose a subject LoRA, or another axis.")
        self.base = dataclasses.replace(self.base, num_images=1)

    @property
    def axes(self) -> list[GridAxis]:
        return [self.x] + ([self.y] if self.y else [])

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return (len(self.y.values) if self.y else 1), len(self.x.values)

    def cell_config(self, row: int, col: int) -> GenerateConfig:
        changes = {self.x.name: self.x.values[col]}
        if self.y is not None:
            changes[self.y.name] = self.y.values[row]
        return dataclasses.replace(self.base, **changes)  # re-validated by __post_init__

    def to_dict(self) -> dict:
        return {"x": self.x.to_dict(), "y": self.y.to_dict() if self.y else None}


@dataclass
class GridProgress:
    done: int  # cells finished
    total: int
    step: int = 0  # sampler step within the cell being drawn
    steps: int = 0
    message: str = ""

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


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Break `text` at spaces so each line fits `width` (a lone long word stays whole)."""
    lines: list[str] = []
    for word in text.split():
        if lines and _text_width(draw, f"{lines[-1]} {word}", font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def draw_grid(cells: list[list[Image.Image | None]], x_title: str, x_labels: list[str],
              y_title: str | None = None, y_labels: list[str] | None = None,
              cell_size: tuple[int, int] = (64, 64)) -> Image.Image:
    """Lay `cells` (rows of images, all one size) out with the axis values written on it.

    Top band: the X title, then each column's value; left band: each row's value, with the
    Y title above it. Cells sit edge to edge; a None cell is left grey (`cell_size` is
    only used when there is no image at all).
    """
    rows, cols = len(cells), len(cells[0])
    sample = next((im for row in cells for im in row if im is not None), None)
    cw, ch = sample.size if sample is not None else cell_size
    font_size = max(11, min(28, cw // 12))
    font, title_font = _font(font_size), _font(font_size + 2)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = max(3, font_size // 2)
    line_h = font_size + 3
    x_lines = [_wrap(probe, label, font, cw - pad) for label in x_labels]
    header_h = pad + (font_size + 5) + pad + max(len(ls) for ls in x_lines) * line_h + pad
    left_w, y_title_lines = 0, []
    if y_labels:
        # The row title wraps rather than widen the band beyond a label or a cell.
        widest = max(_text_width(probe, label, font) for label in y_labels)
        y_title_lines = _wrap(probe, y_title or "", title_font, max(widest, cw))
        widths = [widest] + [_text_width(probe, line, title_font) for line in y_title_lines]
        left_w = max(widths) + 2 * pad
        header_h = max(header_h, 2 * pad + len(y_title_lines) * (line_h + 2))

    canvas = Image.new("RGB", (left_w + cols * cw, header_h + rows * ch), "white")
    draw = ImageDraw.Draw(canvas)
    title_w = _text_width(draw, x_title, title_font)
    draw.text((left_w + max(0, (cols * cw - title_w) // 2), pad), x_title, fill="black",
              font=title_font)
    top = pad + font_size + 5 + pad
    for col, lines in enumerate(x_lines):
        for n, line in enumerate(lines):
            x = left_w + col * cw + (cw - _text_width(draw, line, font)) // 2
            draw.text((x, top + n * line_h), line, fill="black", font=font)
    if y_labels:
        for n, line in enumerate(reversed(y_title_lines)):  # bottom-aligned over the labels
            draw.text((pad, header_h - pad - (n + 1) * (line_h + 2)), line, fill="black",
                      font=title_font)
        for row, label in enumerate(y_labels):
            y = header_h + row * ch + (ch - line_h) // 2
            draw.text((pad, y), label, fill="black", font=font)
    for row in range(rows):
        for col in range(cols):
            box = (left_w + col * cw, header_h + row * ch)
            image = cells[row][col]
            if image is None:
                draw.rectangle((*box, box[0] + cw - 1, box[1] + ch - 1), fill=(220, 220, 220))
            else:
                canvas.paste(image.convert("RGB"), box)
    return canvas


def run_grid(
    generator: Generator,
    config: GridConfig,
    output_dir: Path | None = None,
    progress: Callable[[GridProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> GridResult:
    """Generate every cell with the same seed (unless the seed is an axis), row by row.

    A set `cancel` stops within the current sampler step; the cells finished so far are
    drawn, the interrupted one is left blank and nothing is saved.
    """
    started = time.monotonic()
    emit = progress or (lambda p: None)
    rows, cols = config.shape
    total = rows * cols
    cells: list[list[Image.Image | None]] = [[None] * cols for _ in range(rows)]
    done = 0
    for row in range(rows):
        for col in range(cols):
            if cancel is not None and cancel.is_set():
                break
            cell = config.cell_config(row, col)
            message = f"Image {done + 1} of {total}"
            emit(GridProgress(done, total, 0, cell.steps, message))

            def on_step(step, steps, done=done, message=message):
                emit(GridProgress(done, total, step, steps, message))

            [result] = generator.generate(cell, None, on_step, cancel)
            if cancel is not None and cancel.is_set():
                break  # the half-denoised cell stays blank
            cells[row][col] = result.image
            done += 1
        else:
            continue
        break
    status = "completed" if done == total else "cancelled"
    image = draw_grid(
        cells, config.x.label, [_format(v) for v in config.x.values],
        config.y.label if config.y else None,
        [_format(v) for v in config.y.values] if config.y else None,
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
