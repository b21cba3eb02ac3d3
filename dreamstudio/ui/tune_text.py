"""What the Tune tab says: value lists read from the grid syntax, the candidates' choices,
the progress line, the result's table and the recommendation (pure: no widgets, no model)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ..studio import GridAxis, recommend

if TYPE_CHECKING:
    from ..studio import Candidate, SweepResult, TuneProgress

# Which photos subject fidelity was measured against, as the page says it.
COMPARED_WITH = {
    "held_out": "the held-out photos (never trained on)",
    "training": "the training photos — no photos were held out, so these numbers are "
                "optimistic",
}
PHASES = {"loading": "loading", "timing": "timing", "drawing": "drawing",
          "scoring": "scoring", "done": "done", "cancelled": "stopped"}
IDLE = ("Pick a run and the values to try, then **Estimate** (how many images, about how "
        "long) or **Run sweep**.")


def sweep_values(axis: str, text: str) -> list[float]:
    """The values a box lists for `axis` ("unet_scale", "text_encoder_scale", "guidance"),
    in the X/Y grid's syntax ('0.6, 0.8, 1', '0.5-1 (+0.25)'); an InputError names the box."""
    return [float(v) for v in GridAxis.parse(axis, text).values]


def values_text(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def tolerance_fraction(percent: float) -> float:
    """The slider's percent as TuneConfig's fraction (5 -> 0.05)."""
    return round(float(percent) / 100, 6)


def tolerance_percent(fraction: float) -> float:
    return round(float(fraction) * 100, 4)


def candidate_choices(candidates: list[Candidate]) -> list[tuple[str, str]]:
    """(label, name) for the checkboxes, in the run's order (checkpoints, then final)."""
    return [(c.label, c.name) for c in candidates]


def default_candidates(candidates: list[Candidate]) -> list[str]:
    """The final LoRA when there is one (it comes last), else the last checkpoint."""
    return [candidates[-1].name] if candidates else []


def progress_text(p: TuneProgress) -> str:
    """'image 12/48 · drawing · final, UNet 0.8, ...' (just the phase while nothing counts)."""
    parts = [f"image {p.done}/{p.total}"] if p.total else []
    parts.append(PHASES.get(p.phase, p.phase))
    if p.message:
        parts.append(p.message)
    if p.eta_text:
        parts.append(p.eta_text)
    return " · ".join(parts)


def compared_with_text(compared_with: str) -> str:
    return COMPARED_WITH.get(compared_with, compared_with)


def recommendation_text(result: SweepResult) -> str:
    """The result in words: stopped or done, the recommendation and why, the rule, and
    which photos fidelity was measured against."""
    lines = []
    if result.status != "completed":
        lines.append(f"### ⏹️ Stopped after {len(result.cells)} cell(s)\nThe images drawn so "
                     "far are kept: running the sweep again reuses them. No recommendation "
                     "for a sweep that was stopped.")
    rec = result.recommendation
    if rec is not None:
        if rec.cell is not None:
            lines.append(f"### ✅ Recommended: {rec.cell.label}\n{rec.reason}")
        else:
            lines.append(f"### No cell passes the rule\n{rec.reason}")
        lines.append(f"**Rule:** {rec.rule}")
    lines.append(f"Subject fidelity was measured against "
                 f"{compared_with_text(result.compared_with)}.")
    lines.append(f"{result.drawn} image(s) drawn, {result.reused} reused from an earlier "
                 f"sweep; drawing {result.seconds_drawing:.0f} s, scoring "
                 f"{result.seconds_scoring:.0f} s.")
    return "\n\n".join(lines)


# The table's columns (tune.report's names) as the page heads them, kept narrow.
COLUMN_NAMES = {"candidate": "LoRA", "unet_scale": "UNet", "text_encoder_scale": "TE",
                "guidance": "CFG", "clip_i": "CLIP-I", "clip_t": "CLIP-T", "dino": "DINO",
                "face_found": "faces", "face_misses": "no face", "leak_flagged": "leaks",
                "pareto": "trade-off", "recommended": "pick"}


def page_table(headers: list[str], rows: list[list]) -> tuple[list[str], list[list]]:
    """The page's view of the report's table: short headings, and no column that is empty
    in every row (the face columns when faces were not scored)."""
    keep = [i for i in range(len(headers))
            if any(row[i] not in (None, "") for row in rows)] if rows else range(len(headers))
    return ([COLUMN_NAMES.get(headers[i], headers[i]) for i in keep],
            [[row[i] for i in keep] for row in rows])


def files_list(result: SweepResult) -> list[str]:
    """The result's files that exist, in the order json, csv, png."""
    return [str(result.files[k]) for k in ("json", "csv", "png") if result.files.get(k)]



def sweep_tolerance(result: SweepResult) -> float | None:
    return result.config.get("clip_t_tolerance")


def rejudged(result: SweepResult, tolerance: float) -> SweepResult:
    """`result` judged at CLIP-T `tolerance` (a fraction): the same cells and scores, the
    rule's pick for that tolerance. A stopped sweep has no pick to change."""
    if result.recommendation is None or sweep_tolerance(result) == tolerance:
        return result
    return dataclasses.replace(
        result, recommendation=recommend(result.cells, result.base, tolerance,
                                         result.uses_face),
        config={**result.config, "clip_t_tolerance": tolerance})


def rejudged_note(result: SweepResult, saved: SweepResult) -> str:
    """A line when the page judges at another tolerance than the saved sweep did."""
    if result is saved or sweep_tolerance(saved) is None:
        return ""
    return (f"Judged at a CLIP-T tolerance of {tolerance_percent(sweep_tolerance(result)):g}% "
            f"(the saved sweep used {tolerance_percent(sweep_tolerance(saved)):g}%; its files "
            "keep that). Nothing was drawn again.")
