"""Earlier images of a subject, read back from the PNGs and the settings stored in them.

Nothing else is kept: the generated/ folder is the history, so images copied in from
elsewhere (with DreamStudio metadata) show up too, and deleting a file removes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..config import GENERATE_PRECISIONS, GenerateConfig
from ..core.families import FAMILY_NAMES, SDXL
from .png_metadata import read_parameters
from .samplers import choice_for

MAX_ITEMS = 48
# A PNG written before a setting existed stores none for it: it was made with the default.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GenerateConfig)
             if f.default is not dataclasses.MISSING}


@dataclass
class HistoryItem:
    path: Path
    params: dict  # as save_png_with_parameters stored them

    @property
    def family(self) -> str | None:
        """The base model's family ("sd1", "sd2", "sdxl"); None in PNGs written before the
        family was recorded (all of them SD 1.x or 2.x)."""
        family = self.params.get("model_family")
        return family if family in FAMILY_NAMES else None

    @property
    def is_grid(self) -> bool:
        return bool(self.params.get("grid"))

    def caption(self) -> str:
        """One short line for a thumbnail: what differs most between images."""
        p = self.params
        bits = []
        if self.is_grid:
            grid = p["grid"]
            axes = [grid["x"]["label"]] + ([grid["y"]["label"]] if grid.get("y") else [])
            bits.append("grid: " + " × ".join(axes))
        bits.append(f"seed {p.get('seed')}")
        if p.get("lora_dir") and not self.is_grid:
            unet = p.get("unet_scale", _DEFAULTS["unet_scale"])
            te = p.get("text_encoder_scale", _DEFAULTS["text_encoder_scale"])
            bits.append(f"LoRA {unet:g}/{te:g}")
        bits.append(f"cfg {p.get('guidance', '?')}")
        if self.family == SDXL:
            bits.append(FAMILY_NAMES[SDXL])  # the default family goes unsaid
        return " · ".join(str(b) for b in bits)


def list_history(folder: Path, limit: int = MAX_ITEMS) -> list[HistoryItem]:
    """The newest `limit` PNGs in `folder` that carry DreamStudio parameters, newest first.

    Unreadable or foreign PNGs are skipped: one broken file must not hide the others.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = []
    for path in folder.glob("*.png"):
        try:
            files.append((path.stat().st_mtime, path.name, path))
        except OSError:  # deleted while listing
            continue
    items = []
    for _, _, path in sorted(files, reverse=True):
        try:
            params = read_parameters(path)
        except (OSError, ValueError, SyntaxError):
            continue
        if isinstance(params, dict) and params.get("prompt"):
            items.append(HistoryItem(path, params))
            if len(items) >= limit:
                break
    return items


def settings_from(params: dict) -> dict:
    """The Generate controls' values for stored parameters (GenerateConfig field names).

    Older PNGs stored the scheduler's class name as 'sampler': those map to "Default".
    """
    def stored(name, kind):
        return kind(params.get(name, _DEFAULTS[name]))

    settings = {
        "prompt": params.get("prompt", ""),
        "negative_prompt": params.get("negative_prompt") or _DEFAULTS["negative_prompt"],
        "unet_scale": stored("unet_scale", float),
        "text_encoder_scale": stored("text_encoder_scale", float),
        "guidance": stored("guidance", float),
        "steps": stored("steps", int),
        "seed": stored("seed", int),
        "height": int(params.get("height") or 0),
        "width": int(params.get("width") or 0),
        "sampler": choice_for(params.get("sampler")),
        "precision": params["precision"] if params.get("precision") in GENERATE_PRECISIONS
        else _DEFAULTS["precision"],
        "lora_dir": params.get("lora_dir") or None,
    }
    grid = params.get("grid") or {}
    if grid:
        settings["grid"] = grid
    return settings
