"""What the Tune tab says, without widgets or models: value lists, candidates, progress, the
result's table and its recommendation in words."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamstudio.errors import InputError
from dreamstudio.tune.candidates import Candidate
from dreamstudio.tune.config import TuneConfig
from dreamstudio.tune.results import (
    BASE,
    FINAL,
    CellScore,
    Recommendation,
    SweepResult,
    TuneProgress,
)
from dreamstudio.tune.rule import recommend
from dreamstudio.ui import tune_text as text


def _cell(candidate: str, unet: float, te: float = 1.0, guidance: float = 7.5, **scores):
    step = None if candidate == BASE else 6
    return CellScore(candidate, step, unet, te, guidance, **scores)


def _result(status: str = "completed", compared_with: str = "held_out", pick: bool = True,
            uses_face: bool = False) -> SweepResult:
    base = _cell(BASE, 0.0, 0.0, dino=0.21, clip_i=0.6, clip_t=0.3104)
    low = _cell(FINAL, 0.6, dino=0.5012, clip_i=0.7, clip_t=0.3, face=0.4)
    high = _cell(FINAL, 1.0, dino=0.7, clip_i=0.8, clip_t=0.2, leak_flagged=True)
    rec = None
    if status == "completed":
        rec = Recommendation(low if pick else None, "Highest DINO within 5% of the base.",
                             "the best that passes." if pick else "every cell leaks.",
                             [low.key, high.key])
    return SweepResult(status, [low, high], [base], rec, {}, compared_with, uses_face, {},
                       seconds_drawing=12.4, seconds_scoring=3.0, drawn=5, reused=1,
                       files={"json": "/w/tune.json", "png": "/w/tune.png"})


@pytest.mark.parametrize(("axis", "typed", "values"), [
    ("unet_scale", "0.6, 0.8, 1", [0.6, 0.8, 1.0]),
    ("unet_scale", "0.5-1 (+0.25)", [0.5, 0.75, 1.0]),
    ("text_encoder_scale", "0-1 [3]", [0.0, 0.5, 1.0]),
    ("guidance", "5, 7.5", [5.0, 7.5]),
])
def test_value_boxes_take_the_grid_syntax(axis, typed, values):
    parsed = text.sweep_values(axis, typed)
    assert parsed == values and all(isinstance(v, float) for v in parsed)
    assert text.sweep_values(axis, text.values_text(parsed)) == parsed  # shown as typed back


@pytest.mark.parametrize(("axis", "typed", "words"), [
    ("unet_scale", "0.5, 3", "must be 0-2"),
    ("guidance", "0.5", "must be 1-20"),
    ("unet_scale", "strong", "'strong' is not a number or a range"),
    ("text_encoder_scale", "  ", "no values given"),
])
def test_bad_values_name_the_box(axis, typed, words):
    with pytest.raises(InputError, match=words):
        text.sweep_values(axis, typed)


def test_tolerance_slider_is_the_configs_fraction_in_percent():
    default = TuneConfig.__dataclass_fields__["clip_t_tolerance"].default
    assert text.tolerance_percent(default) == 5
    assert text.tolerance_fraction(text.tolerance_percent(default)) == default
    assert text.tolerance_fraction(12.5) == 0.125 and text.tolerance_fraction(0) == 0


def test_candidates_are_labelled_and_the_final_one_is_ticked():
    checkpoint = Candidate("step-000002", 2, Path("/r/checkpoints/step-000002"), "a")
    final = Candidate(FINAL, 4, Path("/r"), "b")
    assert text.candidate_choices([checkpoint, final]) == [
        ("checkpoint at step 2", "step-000002"), ("final LoRA (step 4)", FINAL)]
    assert text.default_candidates([checkpoint, final]) == [FINAL]
    assert text.default_candidates([checkpoint]) == ["step-000002"]  # a run stopped early
    assert text.default_candidates([]) == []


def test_progress_line_counts_images_and_names_the_cell():
    p = TuneProgress("drawing", 12, 48, "final, UNet 0.8, text encoder 1, guidance 7.5")
    assert text.progress_text(p) == ("image 12/48 · drawing · final, UNet 0.8, text encoder 1, "
                                     "guidance 7.5")
    assert text.progress_text(TuneProgress("loading", message="Embedding the photos")) == (
        "loading · Embedding the photos")
    assert text.progress_text(TuneProgress("cancelled", 3, 8)) == "image 3/8 · stopped"


def test_recommendation_says_the_cell_the_rule_and_the_photos():
    said = text.recommendation_text(_result())
    assert "Recommended: final, UNet 0.6, text encoder 1, guidance 7.5" in said
    assert "guidance 7.5\nthe best that passes." in said  # the rule's reason under it
    assert "**Rule:** Highest DINO within 5% of the base." in said
    assert "measured against the held-out photos (never trained on)." in said
    assert "optimistic" not in said
    assert "5 image(s) drawn, 1 reused" in said


def test_training_photos_are_called_optimistic():
    said = text.recommendation_text(_result(compared_with="training", uses_face=True))
    assert "measured against the training photos — no photos were held out, so these " \
           "numbers are optimistic." in said


def test_no_passing_cell_and_a_stopped_sweep_are_said_as_such():
    said = text.recommendation_text(_result(pick=False))
    assert "No cell passes the rule" in said and "every cell leaks." in said
    assert "Recommended" not in said
    stopped = text.recommendation_text(_result(status="cancelled"))
    assert "Stopped after 2 cell(s)" in stopped and "reuses them" in stopped
    assert "Rule" not in stopped


def test_the_saved_scores_are_judged_again_at_another_tolerance():
    base = _cell(BASE, 0.0, 0.0, dino=0.2, clip_t=0.31)
    near = _cell(FINAL, 0.6, dino=0.4, clip_t=0.30)  # 3% below the base model's CLIP-T
    far = _cell(FINAL, 1.0, dino=0.6, clip_t=0.28)  # 10% below: likelier, less obedient
    saved = SweepResult("completed", [near, far], [base], recommend([near, far], [base], 0.05,
                                                                     False),
                        {"clip_t_tolerance": 0.05}, "held_out", False, {})
    assert saved.recommendation.cell is near
    assert text.rejudged(saved, 0.05) is saved and text.rejudged_note(saved, saved) == ""
    wider = text.rejudged(saved, 0.15)
    assert wider.recommendation.cell is far and "15%" in wider.recommendation.rule
    assert wider.config["clip_t_tolerance"] == 0.15 and saved.config["clip_t_tolerance"] == 0.05
    assert "15%" in text.rejudged_note(wider, saved) and "used 5%" in text.rejudged_note(
        wider, saved)
    assert text.rejudged(saved, 0.0).recommendation.cell is None  # both fall below the base
    stopped = SweepResult("cancelled", [near], [base], None, {"clip_t_tolerance": 0.05},
                          "held_out", False, {})
    assert text.rejudged(stopped, 0.15) is stopped


def test_page_table_heads_columns_short_and_drops_empty_ones():
    headers = ["candidate", "unet_scale", "face", "face_found", "recommended"]
    rows = [["base", 0.0, None, None, ""], ["final", 1.0, None, None, "yes"]]
    assert text.page_table(headers, rows) == (["LoRA", "UNet", "pick"],
                                              [["base", 0.0, ""], ["final", 1.0, "yes"]])
    rows[1][2] = 0.4  # a face score somewhere keeps its column
    assert text.page_table(headers, rows)[0] == ["LoRA", "UNet", "face", "pick"]
    assert text.page_table(headers, []) == (["LoRA", "UNet", "face", "faces", "pick"], [])


def test_files_list_keeps_the_files_the_result_has():
    assert text.files_list(_result()) == ["/w/tune.json", "/w/tune.png"]
