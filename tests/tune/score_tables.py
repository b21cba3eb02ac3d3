"""Hand-made sweep score tables for the rule, report and plot tests."""

from __future__ import annotations

from dreamstudio.tune.results import BASE, FINAL, CellScore, SweepResult
from dreamstudio.tune.rule import recommend


def cell(candidate: str = FINAL, unet: float = 1.0, te: float = 1.0, guidance: float = 7.5,
         dino: float | None = 0.6, clip_t: float | None = 0.26, face: float | None = None,
         leak_flagged: bool | None = False, **extra) -> CellScore:
    step = None if candidate == BASE else extra.pop("step", 400)
    return CellScore(candidate, step, unet, te, guidance, dino=dino, clip_t=clip_t, face=face,
                     leak_flagged=leak_flagged, **extra)


def base(guidance: float = 7.5, dino: float | None = 0.3, clip_t: float | None = 0.262,
         face: float | None = None, **extra) -> CellScore:
    return cell(BASE, 0.0, 0.0, guidance, dino=dino, clip_t=clip_t, face=face,
                leak_flagged=None, **extra)


def sweep(cells: list[CellScore], bases: list[CellScore], uses_face: bool = False,
          tolerance: float = 0.05, **extra) -> SweepResult:
    """A completed sweep of these rows, judged by the rule as the engine would."""
    guidances = list(dict.fromkeys(b.guidance for b in bases)) or [7.5]
    return SweepResult(
        status="completed", cells=cells, base=bases,
        recommendation=recommend(cells, bases, tolerance, uses_face),
        config={"guidances": guidances, "clip_t_tolerance": tolerance,
                "unet_scales": sorted({c.unet_scale for c in cells})},
        compared_with=extra.pop("compared_with", "held_out"), uses_face=uses_face,
        preprocessing=extra.pop("preprocessing", {"dino": "resize 256, crop 224"}), **extra)
