"""Photos kept "for scoring only": the default marking, the review toggle, old manifests,
what training and evaluation read, and the prepare command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamstudio.cli import main
from dreamstudio.config import PrepareConfig
from dreamstudio.data.manifest import (
    MANIFEST_NAME,
    default_held_out,
    image_files,
    load_manifest,
    scoring_files,
)
from dreamstudio.data.prepare import list_image_files, prepare_photos
from dreamstudio.data.review import set_excluded, set_held_out
from dreamstudio.errors import InputError
from dreamstudio.evaluate.evaluate import real_photo_files
from dreamstudio.evaluate.report import EvalReport, format_table


def _photos(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{i:02d}.png")
    return folder


def _prepare(tmp_path: Path, count: int, **kw) -> Path:
    out = tmp_path / "crops"
    sources = list_image_files(_photos(tmp_path / "src", count))
    prepare_photos(sources, out, PrepareConfig(mode="object", size=64, **kw))
    return out


def test_default_rule_is_every_sixth_in_name_order_and_none_below_six() -> None:
    names = [f"{i:03d}.png" for i in range(13)]
    assert default_held_out(names[:5]) == []
    assert default_held_out(names[:6]) == ["005.png"]
    assert default_held_out(list(reversed(names))) == ["005.png", "011.png"]


def test_prepare_marks_the_default_and_training_never_reads_them(tmp_path: Path) -> None:
    out = _prepare(tmp_path, 7)
    report = load_manifest(out)
    assert report.held_out == ["005_photo05.png"]
    assert [p.name for p in scoring_files(out)] == ["005_photo05.png"]
    trained = [p.name for p in image_files(out)]
    assert len(trained) == 6 and "005_photo05.png" not in trained


def test_few_photos_hold_nothing_out_and_the_config_can_turn_it_off(tmp_path: Path) -> None:
    assert load_manifest(_prepare(tmp_path / "a", 5)).held_out == []
    assert load_manifest(_prepare(tmp_path / "b", 12, hold_out=False)).held_out == []
    assert len(image_files(tmp_path / "b" / "crops")) == 12


def test_marks_changed_in_review_survive_prepare_again(tmp_path: Path) -> None:
    out = _prepare(tmp_path, 7)
    set_held_out(out, "005_photo05.png", False)
    set_held_out(out, "001_photo01.png", True)
    assert load_manifest(out).held_out == ["001_photo01.png"]
    prepare_photos(list_image_files(tmp_path / "src"), out, PrepareConfig(mode="object", size=64))
    assert load_manifest(out).held_out == ["001_photo01.png"]
    assert "001_photo01.png" not in [p.name for p in image_files(out)]


def test_review_refuses_to_hold_out_the_last_training_photo(tmp_path: Path) -> None:
    out = _prepare(tmp_path, 2)
    set_held_out(out, "000_photo00.png", True)
    with pytest.raises(InputError, match="last photo left for training"):
        set_held_out(out, "001_photo01.png", True)
    with pytest.raises(InputError, match="no prepared photo named 'nope.png'"):
        set_held_out(out, "nope.png", True)


def test_a_manifest_without_the_field_holds_nothing_out(tmp_path: Path) -> None:
    out = _prepare(tmp_path, 7)
    path = out / MANIFEST_NAME
    data = json.loads(path.read_text())
    del data["held_out"]
    data["version"] = 2
    path.write_text(json.dumps(data))
    assert load_manifest(out).held_out == [] and scoring_files(out) == []
    assert len(image_files(out)) == 7


def _edit(out: Path, change) -> None:
    path = out / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_manifest_holding_every_photo_out_is_refused_naming_the_file(tmp_path: Path) -> None:
    out = _prepare(tmp_path, 3)
    _edit(out, lambda d: d.update(held_out=[r["output"] for r in d["results"]]))
    with pytest.raises(InputError, match=rf"{MANIFEST_NAME}.*every usable photo"):
        image_files(out)


def test_a_copy_of_a_held_out_photo_listed_for_training_is_refused(tmp_path: Path) -> None:
    out = _prepare(tmp_path, 7)

    def copy_digest(data: dict) -> None:
        results = {r["output"]: r for r in data["results"]}
        results["000_photo00.png"]["digest"] = results["005_photo05.png"]["digest"]

    _edit(out, copy_digest)
    with pytest.raises(InputError, match="'000_photo00.png' for training.*scoring only"):
        image_files(out)


def test_an_excluded_photo_is_not_scored_either(tmp_path: Path) -> None:
    out = _prepare(tmp_path, 7)
    set_excluded(out, "005_photo05.png", True)
    assert scoring_files(out) == []


def test_evaluation_compares_with_held_out_photos_when_there_are_any(tmp_path: Path) -> None:
    held = _prepare(tmp_path / "a", 7)
    files, kind = real_photo_files(held)
    assert kind == "held_out" and [p.name for p in files] == ["005_photo05.png"]
    plain = _prepare(tmp_path / "b", 4)
    files, kind = real_photo_files(plain)
    assert kind == "training" and len(files) == 4

    report = EvalReport(config={}, model="m", real_images=["x.png"], compared_with="held_out")
    assert report.to_dict()["compared_with"] == "held_out"
    assert "1 photo(s) kept for scoring only" in format_table(report)
    report.compared_with = "training"
    assert "training photo(s)" in format_table(report)


def test_prepare_command_reports_and_can_turn_off_the_held_out_photos(
        tmp_path: Path, capsys) -> None:
    src = _photos(tmp_path / "src", 7)
    args = ["prepare", str(src), str(tmp_path / "out"), "--mode", "object", "--size", "64"]
    assert main(args) == 0
    assert "1 held out for scoring only" in capsys.readouterr().out
    assert main([*args, "--no-hold-out"]) == 0
    assert "0 held out for scoring only" in capsys.readouterr().out
    assert load_manifest(tmp_path / "out").held_out == []
