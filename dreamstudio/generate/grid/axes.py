"""Grid axes: which setting each axis varies, and the value lists that say how.

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
from dataclasses import dataclass, field

from ...config import GenerateConfig
from ...errors import InputError
from ..samplers import SAMPLER_NAMES

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


def format_value(value) -> str:
    """How a value reads in the grid labels and the value lists: 0.5, not 0.500000."""
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
                                 f"(got {format_value(number)}).")
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
        return ", ".join(format_value(v) for v in self.values)

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
