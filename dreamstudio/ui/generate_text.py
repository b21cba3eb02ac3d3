"""What the Generate tab says: captions of images and grids, the history note, and the
note of settings put back from a history image (pure: no widgets, no model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import duration

if TYPE_CHECKING:
    from ..config import GenerateConfig
    from ..studio import GridConfig, GridProgress, GridResult

VALUES_HELP = (
    "Comma-separated values, or ranges: '0-1 (+0.25)' = 0 to 1 in steps of 0.25, "
    "'0-1 [5]' = 5 evenly spaced values, '1-4' = 1, 2, 3, 4. Samplers by name, e.g. "
    "'Euler a, DDIM'. At most {max_cells} images per grid."
)


def settings_text(config: GenerateConfig, label: str) -> str:
    text = f"{config.steps} steps, {config.sampler} sampler, guidance {config.guidance:g}, "
    if config.lora_dir is None:
        return text + "base model"
    return text + (f"LoRA **{label}** (UNet {config.unet_scale:g}, "
                   f"text encoder {config.text_encoder_scale:g})")


def caption(config: GenerateConfig, label: str, size: tuple[int, int], seconds: float) -> str:
    return (f"{config.num_images} image(s), {size[0]}x{size[1]} px, seeds {config.seed}"
            f"-{config.seed + config.num_images - 1}, {settings_text(config, label)}, "
            f"{seconds:.1f} s. Saved in the workspace with their settings.")


def draw_progress(step: int, steps: int, first: int, last: int, total: int,
                  seconds_left: float | None) -> str:
    """'step 12/20 · image 3 of 12 · about 35 s left' (images first-last drawn at once)."""
    images = f"image {first} of {total}" if first == last else (
        f"images {first}-{last} of {total}")
    left = f" · about {duration(seconds_left)} left" if seconds_left is not None else ""
    return f"step {step}/{steps} · {images}{left}"


def grid_progress(p: GridProgress) -> str:
    if not p.steps:
        return f"{p.done}/{p.total} images done"
    return draw_progress(p.step, p.steps, p.done + 1, p.done + 1, p.total, p.seconds_left)


def grid_caption(grid: GridConfig, label: str, result: GridResult) -> str:
    """The caption of a finished grid, or of one stopped part-way."""
    if result.status != "completed":
        return (f"⏹️ Stopped after {result.done} of {result.total} images; the partial "
                "grid is shown but not saved.")
    rows, cols = grid.shape
    x, y = grid.x, grid.y
    axes = f"X = {x.label} {x.text}" + (f"; Y = {y.label} {y.text}" if y else "")
    return (f"Grid of {result.total} images ({cols} × {rows}): {axes}. Seed "
            f"{grid.base.seed}, {settings_text(grid.base, label)}, {result.seconds:.1f} s. "
            f"Saved as `{result.path.name}` with its settings and axes.")


def history_note(count: int, subject: str | None) -> str:
    whose = f"subject **{subject}**" if subject else "the base model"
    if count:
        return (f"{count} earlier image(s) of {whose}, newest first. Click one to put "
                "its settings back into the controls.")
    return f"No images of {whose} yet: they appear here as you generate."


def restored_note(file: str, lora_missing: bool, parameters_text: str) -> str:
    note = f"Settings of `{file}` loaded into the controls"
    if lora_missing:
        note += " (its LoRA no longer exists, so the LoRA choice was kept)"
    return note + f":\n```\n{parameters_text}\n```"


def values_text(axis: dict) -> str:
    """A grid axis's stored values as the values box shows them."""
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v)
                     for v in axis.get("values", []))
