"""A sweep's files: tune.json read back whole, tune.csv, tune.png; the CLI and page tables."""

from __future__ import annotations

import csv
import io

from PIL import Image

from dreamstudio.core.files import find_temporaries
from dreamstudio.tune.report import (
    COLUMNS,
    CSV_NAME,
    JSON_NAME,
    PLOT_NAME,
    format_table,
    read_result,
    table_rows,
    write_result,
)
from tests.tune.score_tables import base, cell, sweep


def _full_result():
    """Every field away from its default, so a dropped field fails the round trip."""
    cells = [
        cell("step-000200", unet=0.8, te=0.5, dino=0.61, clip_t=0.259, face=0.52, step=200,
             clip_i=0.71, face_found=3, face_misses=1, leak=0.41, leak_flagged=False,
             images=["cells/a/0.png", "cells/a/1.png"], leak_images=["leak/a/0.png"],
             reused=2),
        cell(unet=1.0, te=1.0, dino=0.74, clip_t=0.262, face=0.66, clip_i=0.8, face_found=4,
             face_misses=0, leak=0.45, leak_flagged=False, images=["cells/b/0.png"]),
        cell(unet=1.0, te=0.5, dino=0.8, clip_t=0.21, face=None, clip_i=0.83, face_found=0,
             face_misses=4, leak=0.6, leak_flagged=True, images=["cells/c/0.png"]),
    ]
    bases = [base(7.5, dino=0.3, clip_t=0.27, face=0.12, clip_i=0.55, face_found=4,
                  face_misses=0, leak=0.38, images=["base/0.png"])]
    return sweep(cells, bases, uses_face=True, seconds_drawing=12.5, seconds_scoring=3.25,
                 drawn=7, reused=2, preprocessing={"dino": "resize 256", "clip": "224 crop"})


def test_write_then_read_gives_every_field_back(tmp_path):
    result = _full_result()
    paths = write_result(result, tmp_path / "sweep")
    assert set(paths) == {"json", "csv", "png"}
    assert [p.name for p in paths.values()] == [JSON_NAME, CSV_NAME, PLOT_NAME]
    assert all(p.is_file() for p in paths.values())
    assert result.files == {k: str(p) for k, p in paths.items()}
    assert not find_temporaries(tmp_path / "sweep")
    back = read_result(tmp_path / "sweep")
    assert back == result
    assert back.recommendation.cell == result.cells[1]
    assert back.recommendation.pareto == result.recommendation.pareto
    assert all(isinstance(k, tuple) for k in back.recommendation.pareto)


def test_a_cancelled_sweep_round_trips_without_a_recommendation(tmp_path):
    result = _full_result()
    result.status, result.recommendation = "cancelled", None
    write_result(result, tmp_path)
    assert read_result(tmp_path) == result
    assert "No recommendation: the sweep was cancelled." in format_table(result)


def test_read_result_is_none_when_absent_or_unreadable(tmp_path):
    assert read_result(tmp_path) is None
    (tmp_path / JSON_NAME).write_text("{not json")
    assert read_result(tmp_path) is None
    (tmp_path / JSON_NAME).write_text('{"status": "completed"}')
    assert read_result(tmp_path) is None


def test_the_csv_has_the_columns_and_a_row_per_cell_base_first(tmp_path):
    result = _full_result()
    paths = write_result(result, tmp_path)
    rows = list(csv.reader(io.StringIO(paths["csv"].read_text())))
    assert rows[0] == list(COLUMNS)
    records = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert len(records) == len(result.base) + len(result.cells)
    assert records[0]["candidate"] == "base" and records[0]["step"] == ""
    assert records[0]["images"] == "base/0.png"
    lora = records[1:]
    assert [r["candidate"] for r in lora] == [c.candidate for c in result.cells]
    assert lora[0]["images"] == "cells/a/0.png;cells/a/1.png"
    assert float(lora[0]["dino"]) == result.cells[0].dino
    assert lora[2]["face"] == "" and lora[2]["face_found"] == "0"
    assert [r["leak_flagged"] for r in lora] == ["no", "no", "yes"]
    assert [r["recommended"] for r in records] == ["no", "no", "yes", "no"]
    front = set(result.recommendation.pareto)
    assert [r["pareto"] for r in lora] == ["yes" if c.key in front else "no"
                                           for c in result.cells]


def test_the_plot_file_is_a_png_of_the_default_size(tmp_path):
    paths = write_result(_full_result(), tmp_path)
    with Image.open(paths["png"]) as image:
        assert image.format == "PNG"
        assert image.size == (720, 480)


def test_degenerate_tables_still_write_and_read_back(tmp_path):
    tables = {
        "one": sweep([cell()], [base()]),
        "flat": sweep([cell(unet=u) for u in (0.6, 1.0)], [base(dino=0.6, clip_t=0.26)]),
        "no_scores": sweep([cell(dino=None, clip_t=None)], [base(dino=None, clip_t=None)]),
        "empty": sweep([], []),
    }
    for name, result in tables.items():
        write_result(result, tmp_path / name)
        assert read_result(tmp_path / name) == result, name


def test_format_table_shows_cells_the_pick_the_rule_and_the_photos():
    result = _full_result()
    text = format_table(result)
    rec = result.recommendation
    assert f"Recommended: {rec.cell.label}" in text
    assert f"Rule: {rec.rule}" in text and rec.reason in text
    assert "held-out photos (never trained on)" in text
    lines = text.splitlines()
    picked = [ln for ln in lines if ln.startswith("*")]
    assert len(picked) == 1 and "final, UNet 1, TE 1, g 7.5" in picked[0]
    # The pick is also the only Pareto cell here (it beats the others on both scores).
    assert [ln for ln in lines if "+" in ln[:3]] == picked
    assert any("!" in ln[:3] and "TE 0.5" in ln for ln in lines)
    assert any("base model, g 7.5" in ln for ln in lines)
    result.compared_with = "training"
    assert "no photos were held out, so fidelity is optimistic" in format_table(result)


def test_format_table_without_a_pick_says_why():
    result = sweep([cell(clip_t=0.2)], [base(clip_t=0.262)])
    text = format_table(result)
    assert "Recommended: none" in text
    assert "No cell keeps CLIP-T within 5%" in text


def test_table_rows_match_the_csv_columns_rounded():
    result = _full_result()
    result.cells[0].dino = 0.612345
    headers, rows = table_rows(result)
    assert headers == list(COLUMNS[:-1])
    assert len(rows) == len(result.base) + len(result.cells)
    assert all(len(r) == len(headers) for r in rows)
    first = dict(zip(headers, rows[1], strict=True))
    assert first["dino"] == 0.612
    assert first["candidate"] == "step-000200" and first["step"] == 200
    assert dict(zip(headers, rows[0], strict=True))["face"] == 0.12
    assert [dict(zip(headers, r, strict=True))["recommended"] for r in rows].count("yes") == 1
