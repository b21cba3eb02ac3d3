"""A sweep's files and tables: tune.json keeps everything and is read back after a restart,
tune.csv has a row per cell for a spreadsheet, tune.png the scatter plot; format_table is the
terminal's view and table_rows the page's.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from pathlib import Path

from ..core.files import atomic_path, atomic_write_json, atomic_write_text
from .plot import draw_scatter
from .results import CellScore, Recommendation, SweepResult
from .rule import fidelity_name

log = logging.getLogger(__name__)

JSON_NAME = "tune.json"
CSV_NAME = "tune.csv"
PLOT_NAME = "tune.png"
FORMAT_VERSION = 1
COLUMNS = ("candidate", "step", "unet_scale", "text_encoder_scale", "guidance", "dino",
           "clip_i", "clip_t", "face", "face_found", "face_misses", "leak", "leak_flagged",
           "pareto", "recommended", "images")
COMPARED_WITH = {
    "held_out": "held-out photos (never trained on)",
    "training": "the training photos (no photos were held out, so fidelity is optimistic)",
}
_CELL_FIELDS = {f.name for f in dataclasses.fields(CellScore)}


def write_result(result: SweepResult, folder: Path) -> dict[str, Path]:
    """Write tune.png, tune.csv and tune.json (last, so it records the other two) into
    `folder`; result.files gets their paths."""
    folder = Path(folder)
    paths = {"json": folder / JSON_NAME, "csv": folder / CSV_NAME, "png": folder / PLOT_NAME}
    result.files = {name: str(path) for name, path in paths.items()}
    with atomic_path(paths["png"]) as tmp:
        draw_scatter(result).save(tmp, format="PNG")
    atomic_write_text(paths["csv"], csv_text(result))
    atomic_write_json(paths["json"], result_to_dict(result))
    return paths


def result_to_dict(result: SweepResult) -> dict:
    rec = result.recommendation
    return {
        "version": FORMAT_VERSION, "status": result.status,
        "cells": [c.to_dict() for c in result.cells], "base": [b.to_dict() for b in result.base],
        "recommendation": rec.to_dict() if rec else None, "config": result.config,
        "compared_with": result.compared_with, "uses_face": result.uses_face,
        "preprocessing": result.preprocessing, "seconds_drawing": result.seconds_drawing,
        "seconds_scoring": result.seconds_scoring, "drawn": result.drawn,
        "reused": result.reused, "files": result.files,
    }


def read_result(folder: Path) -> SweepResult | None:
    """The sweep saved in `folder`, or None when there is none or it cannot be read."""
    path = Path(folder) / JSON_NAME
    if not path.is_file():
        return None
    try:
        return result_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("Could not read the sweep in %s: %s", path, exc)
        return None


def result_from_dict(data: dict) -> SweepResult:
    rec = data.get("recommendation")
    return SweepResult(
        status=data["status"], cells=[_cell(c) for c in data["cells"]],
        base=[_cell(b) for b in data["base"]],
        recommendation=None if rec is None else Recommendation(
            cell=None if rec["cell"] is None else _cell(rec["cell"]), rule=rec["rule"],
            reason=rec["reason"], pareto=[tuple(k) for k in rec.get("pareto", [])]),
        config=data["config"], compared_with=data["compared_with"],
        uses_face=data["uses_face"], preprocessing=data.get("preprocessing", {}),
        seconds_drawing=data.get("seconds_drawing", 0.0),
        seconds_scoring=data.get("seconds_scoring", 0.0), drawn=data.get("drawn", 0),
        reused=data.get("reused", 0), files=data.get("files", {}),
    )


def _cell(data: dict) -> CellScore:
    # Fields a later version added are dropped rather than refused.
    return CellScore(**{k: v for k, v in data.items() if k in _CELL_FIELDS})


def recommended_key(result: SweepResult) -> tuple | None:
    rec = result.recommendation
    return rec.cell.key if rec and rec.cell else None


def pareto_keys(result: SweepResult) -> set[tuple]:
    return set(result.recommendation.pareto) if result.recommendation else set()


def _yes(flag: bool | None) -> str:
    return "" if flag is None else ("yes" if flag else "no")


def _row(cell: CellScore, result: SweepResult, rounding: int | None) -> list:
    def number(value):
        if value is None or isinstance(value, bool) or rounding is None:
            return value
        return round(value, rounding)

    return [cell.candidate, cell.step, number(cell.unet_scale),
            number(cell.text_encoder_scale), number(cell.guidance), number(cell.dino),
            number(cell.clip_i), number(cell.clip_t), number(cell.face), cell.face_found,
            cell.face_misses, number(cell.leak), _yes(cell.leak_flagged),
            _yes(cell.key in pareto_keys(result)),
            _yes(cell.key == recommended_key(result))]


def csv_text(result: SweepResult) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for cell in [*result.base, *result.cells]:
        row = _row(cell, result, None) + [";".join(cell.images)]
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


def table_rows(result: SweepResult) -> tuple[list[str], list[list]]:
    """Headers and rows for the page's table: base rows first, numbers to 3 decimals."""
    rows = [_row(cell, result, 3) for cell in [*result.base, *result.cells]]
    return list(COLUMNS[:-1]), rows


def compared_with_words(result: SweepResult) -> str:
    return COMPARED_WITH.get(result.compared_with, result.compared_with)


def format_table(result: SweepResult) -> str:
    """Plain-text table: the base rows, every cell (* recommended, + Pareto, ! leak flagged),
    then the rule, the recommendation and what subject fidelity was measured against."""
    names = ["DINO", "CLIP-I", "CLIP-T", "face", "leak"]
    width = max([len("Cell")] + [len(_short_label(c)) for c in [*result.base, *result.cells]])

    def line(mark: str, label: str, values: list[str]) -> str:
        return f"{mark:<3}{label:<{width}}" + "".join(f"  {v:>6}" for v in values)

    def scores(cell: CellScore) -> list[str]:
        return [_score(cell.dino), _score(cell.clip_i), _score(cell.clip_t), _score(cell.face),
                _score(cell.leak)]

    header = line("", "Cell", names)
    rule = "-" * len(header)
    lines = [header, rule]
    lines += [line("", _short_label(b), scores(b)) for b in result.base]
    lines.append(rule)
    best, front = recommended_key(result), pareto_keys(result)
    for cell in result.cells:
        mark = ("*" if cell.key == best else "") + ("+" if cell.key in front else "")
        mark += "!" if cell.leak_flagged else ""
        lines.append(line(mark, _short_label(cell), scores(cell)))
    lines += [rule, "Marks: * recommended, + best trade-off (Pareto), ! leak flagged"]
    rec = result.recommendation
    if rec is None:
        lines.append(f"No recommendation: the sweep was {result.status}.")
    else:
        lines.append(f"Rule: {rec.rule}")
        picked = rec.cell.label if rec.cell else "none"
        lines.append(f"Recommended: {picked}")
        lines.append(f"Why: {rec.reason}")
    lines.append(f"Subject fidelity ({fidelity_name(result.uses_face)}) is measured against "
                 f"{compared_with_words(result)}.")
    if result.status != "completed":
        lines.append(f"(cancelled: {len(result.cells)} cells scored)")
    return "\n".join(lines)


def _short_label(cell: CellScore) -> str:
    if cell.is_base:
        return f"base model, g {cell.guidance:g}"
    return (f"{cell.candidate}, UNet {cell.unet_scale:g}, TE {cell.text_encoder_scale:g}, "
            f"g {cell.guidance:g}")


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
