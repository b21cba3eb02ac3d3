"""The recommendation rule on hand-made score tables: exclusions, ties, base rows, reasons."""

from __future__ import annotations

import pytest

from dreamstudio.tune.rule import pareto_front, recommend, rule_text
from tests.tune.score_tables import base, cell

TOL = 0.05


def test_a_clear_winner_is_picked_and_its_reason_names_its_scores():
    cells = [cell(unet=0.6, dino=0.55, clip_t=0.26), cell(unet=0.8, dino=0.71, clip_t=0.258),
             cell(unet=1.0, dino=0.62, clip_t=0.255)]
    rec = recommend(cells, [base()], TOL, uses_face=False)
    assert rec.cell is cells[1]
    assert "DINO 0.710 vs the base model's 0.300" in rec.reason
    assert "CLIP-T 0.258 vs 0.262" in rec.reason
    assert rec.rule == rule_text(TOL, False)
    assert "does not beat" not in rec.reason


def test_higher_fidelity_below_the_clip_t_tolerance_is_skipped():
    ref = base(clip_t=0.262)
    limit = ref.clip_t * (1 - TOL)
    too_far = cell(unet=1.0, dino=0.9, clip_t=limit - 1e-4)
    at_limit = cell(unet=0.8, dino=0.7, clip_t=limit)  # exactly on the line still passes
    rec = recommend([too_far, at_limit], [ref], TOL, uses_face=False)
    assert rec.cell is at_limit
    assert "1 below the CLIP-T tolerance" in rec.reason
    # A wider tolerance lets the stronger cell in.
    assert recommend([too_far, at_limit], [ref], 0.2, uses_face=False).cell is too_far


def test_a_negative_base_clip_t_still_gets_a_floor_below_it():
    # Any cosine can be negative (the tests' random scorers give about -0.09): a cell equal
    # to the base model stays within the tolerance, one 10% below it does not.
    ref = base(clip_t=-0.09)
    same = cell(unet=0.6, dino=0.5, clip_t=-0.09)
    worse = cell(unet=1.0, dino=0.9, clip_t=-0.09 - 0.1 * 0.09)
    rec = recommend([worse, same], [ref], TOL, uses_face=False)
    assert rec.cell is same


def test_a_leak_flagged_cell_is_skipped():
    leaky = cell(unet=1.0, dino=0.9, clip_t=0.26, leak_flagged=True)
    clean = cell(unet=0.8, dino=0.7, clip_t=0.26, leak_flagged=False)
    unchecked = cell(unet=0.6, dino=0.5, clip_t=0.26, leak_flagged=None)  # no leak check
    rec = recommend([leaky, clean, unchecked], [base()], TOL, uses_face=False)
    assert rec.cell is clean
    assert "1 leaking" in rec.reason
    assert recommend([leaky, unchecked], [base()], TOL, False).cell is unchecked


def test_equal_fidelity_goes_to_the_higher_clip_t():
    low = cell(unet=0.6, dino=0.7, clip_t=0.255)
    high = cell(unet=1.0, dino=0.7, clip_t=0.26)
    assert recommend([low, high], [base()], TOL, False).cell is high
    assert recommend([high, low], [base()], TOL, False).cell is high


def test_equal_fidelity_and_clip_t_go_to_the_lower_unet_scale():
    strong = cell(unet=1.0, te=0.5, dino=0.7, clip_t=0.26)
    mild = cell(unet=0.8, te=1.0, dino=0.7, clip_t=0.26)
    assert recommend([strong, mild], [base()], TOL, False).cell is mild
    assert recommend([mild, strong], [base()], TOL, False).cell is mild


def test_then_the_lower_text_encoder_scale():
    te_high = cell(unet=0.8, te=1.0, dino=0.7, clip_t=0.26)
    te_low = cell(unet=0.8, te=0.5, dino=0.7, clip_t=0.26)
    assert recommend([te_high, te_low], [base()], TOL, False).cell is te_low
    assert recommend([te_low, te_high], [base()], TOL, False).cell is te_low


def test_then_the_earlier_cell_of_the_sweep():
    first = cell("step-000200", unet=0.8, te=0.5, dino=0.7, clip_t=0.26, step=200)
    second = cell("final", unet=0.8, te=0.5, dino=0.7, clip_t=0.26)
    assert recommend([first, second], [base()], TOL, False).cell is first
    assert recommend([second, first], [base()], TOL, False).cell is second


def test_every_cell_below_the_tolerance_gives_no_cell_and_says_why():
    cells = [cell(unet=1.0, dino=0.9, clip_t=0.230), cell(unet=0.8, dino=0.8, clip_t=0.241)]
    rec = recommend(cells, [base(clip_t=0.262)], TOL, False)
    assert rec.cell is None
    assert rec.reason.startswith("No cell keeps CLIP-T within 5% of the base model's")
    assert "best 0.241 vs base 0.262 at guidance 7.5" in rec.reason
    assert "lower the UNet scale, or widen the tolerance" in rec.reason


def test_every_cell_within_the_tolerance_leaking_says_so():
    cells = [cell(unet=1.0, dino=0.9, clip_t=0.230),
             cell(unet=0.8, dino=0.8, clip_t=0.26, leak_flagged=True),
             cell(unet=0.6, dino=0.7, clip_t=0.26, leak_flagged=True)]
    rec = recommend(cells, [base()], TOL, False)
    assert rec.cell is None
    assert rec.reason.startswith("Every cell within the tolerance leaks")
    assert "1 cell falls more than 5% below" in rec.reason and "2 of the rest leak" in rec.reason
    all_leak = recommend(cells[1:], [base()], TOL, False)
    assert all_leak.cell is None and all_leak.reason.startswith("Every cell leaks")


def test_mixed_reasons_are_all_counted():
    cells = [cell(unet=1.0, clip_t=0.20), cell(unet=0.8, clip_t=0.26, leak_flagged=True),
             cell(unet=0.6, clip_t=0.26, face=None, face_found=0, face_misses=4)]
    rec = recommend(cells, [base(face=0.2)], TOL, uses_face=True)
    assert rec.cell is None
    assert rec.reason.startswith("No cell passes the rule")
    for part in ("1 cell falls more than 5% below", "1 of the rest leaks",
                 "1 has no face found in its images"):
        assert part in rec.reason


def test_no_face_found_anywhere_says_so():
    cells = [cell(unet=u, dino=0.8, face=None, face_found=0, face_misses=4)
             for u in (0.6, 1.0)]
    rec = recommend(cells, [base(face=0.3)], TOL, uses_face=True)
    assert rec.cell is None
    assert rec.reason.startswith("No face was found in any image of any cell")
    # Ranked by DINO instead, the same cells are fine.
    assert recommend(cells, [base()], TOL, uses_face=False).cell is cells[0]


def test_each_cell_compares_with_the_base_row_of_its_own_guidance():
    # CLIP-T 0.24 is within 5% of the guidance-5 base (0.245) but not of guidance 7.5's (0.27).
    bases = [base(5.0, clip_t=0.245), base(7.5, clip_t=0.27)]
    low_g = cell(guidance=5.0, dino=0.8, clip_t=0.24)
    high_g = cell(guidance=7.5, dino=0.9, clip_t=0.24)
    rec = recommend([low_g, high_g], bases, TOL, False)
    assert rec.cell is low_g
    assert "at guidance 5" in rec.reason and "nearest" not in rec.reason
    assert recommend([low_g], [base(7.5, clip_t=0.27)], TOL, False).cell is None


def test_a_missing_guidance_uses_the_nearest_base_row_and_says_so():
    bases = [base(5.0, clip_t=0.245), base(9.0, clip_t=0.30)]
    lone = cell(guidance=6.0, dino=0.8, clip_t=0.24)  # nearest: 5 (passes); 9 would fail
    rec = recommend([lone], bases, TOL, False)
    assert rec.cell is lone
    assert "no CLIP-T score at guidance 6" in rec.reason
    assert "nearest guidance: guidance 6 with the base model at 5" in rec.reason


def test_face_identity_ranks_people_and_dino_everything_else():
    dino_best = cell(unet=1.0, dino=0.9, face=0.4, clip_t=0.26)
    face_best = cell(unet=0.8, dino=0.6, face=0.7, clip_t=0.26)
    bases = [base(face=0.1)]
    assert recommend([dino_best, face_best], bases, TOL, uses_face=False).cell is dino_best
    by_face = recommend([dino_best, face_best], bases, TOL, uses_face=True)
    assert by_face.cell is face_best
    assert "face identity 0.700 vs the base model's 0.100" in by_face.reason
    assert "face identity" in by_face.rule and "DINO" not in by_face.rule


def test_a_pick_that_does_not_beat_the_base_model_is_kept_but_flagged():
    weak = cell(dino=0.28, clip_t=0.26)
    rec = recommend([weak], [base(dino=0.3)], TOL, False)
    assert rec.cell is weak
    assert "does not beat the base model" in rec.reason


def test_the_pareto_keys_are_filled():
    cells = [cell(unet=1.0, dino=0.9, clip_t=0.22), cell(unet=0.8, dino=0.8, clip_t=0.26),
             cell(unet=0.6, dino=0.7, clip_t=0.25)]
    rec = recommend(cells, [base()], TOL, False)
    assert rec.pareto == [cells[0].key, cells[1].key]


def test_no_cells_or_no_base_scores_give_no_cell():
    assert recommend([], [base()], TOL, False).cell is None
    rec = recommend([cell()], [base(clip_t=None)], TOL, False)
    assert rec.cell is None and "base model has no CLIP-T" in rec.reason


@pytest.mark.parametrize("tolerance, words", [(0.05, "5%"), (0.07, "7%"), (0.125, "12.5%")])
def test_rule_text_states_the_tolerance(tolerance, words):
    text = rule_text(tolerance, uses_face=False)
    assert f"at most {words} below the base model's" in text
    assert "DINO" in text and "leak is not flagged" in text


def test_pareto_front_on_a_known_set():
    a = cell(unet=0.1, dino=0.9, clip_t=0.20)
    b = cell(unet=0.2, dino=0.8, clip_t=0.25)
    c = cell(unet=0.3, dino=0.7, clip_t=0.24)  # beaten by b on both
    d = cell(unet=0.4, dino=0.6, clip_t=0.30)
    e = cell(unet=0.5, dino=None, clip_t=0.50)  # no score: never on the front
    f = cell(unet=0.6, dino=0.8, clip_t=0.25)  # ties b: neither beats the other
    g = cell(unet=0.7, dino=0.9, clip_t=0.19)  # beaten by a on CLIP-T alone
    h = cell(unet=0.8, dino=0.95, clip_t=None)
    assert pareto_front([a, b, c, d, e, f, g, h], uses_face=False) == [a, b, d, f]
    # By face, the order of the same cells changes what is on the front.
    for x, face in ((a, 0.1), (b, 0.2), (c, 0.9), (d, 0.3), (f, 0.2), (g, None)):
        x.face = face
    assert pareto_front([a, b, c, d, f, g], uses_face=True) == [c, d]
