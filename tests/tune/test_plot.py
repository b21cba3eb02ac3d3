"""The sweep's scatter plot: size, colours, markers, and tables with nothing to scale by."""

from __future__ import annotations

import pytest

from dreamstudio.tune.plot import (
    BASE_COLOUR,
    PICK_COLOUR,
    candidate_colours,
    draw_scatter,
    tolerance_line,
)
from tests.tune.score_tables import base, cell, sweep


def _count(image, colour) -> int:
    return sum(1 for px in image.getdata() if px == colour)


def _two_candidates():
    cells = [cell("step-000200", unet=u, dino=0.5 + u / 4, clip_t=0.27 - u / 100, step=200)
             for u in (0.6, 0.8, 1.0)]
    cells += [cell(unet=u, dino=0.55 + u / 4, clip_t=0.268 - u / 100) for u in (0.6, 0.8, 1.0)]
    return sweep(cells, [base(7.5, clip_t=0.27), base(5.0, clip_t=0.26)])


def test_the_plot_has_the_size_asked_for_and_a_colour_per_candidate():
    result = _two_candidates()
    image = draw_scatter(result, size=(500, 300))
    assert image.size == (500, 300)
    colours = candidate_colours(result)
    assert len(set(colours.values())) == 2
    for colour in colours.values():
        assert _count(image, colour) > 20
    assert _count(image, BASE_COLOUR) > 0
    assert len(image.getcolors(maxcolors=1 << 16)) > 2


def test_the_recommended_cell_is_ringed():
    with_pick = _two_candidates()
    assert with_pick.recommendation.cell is not None
    without = _two_candidates()
    without.recommendation = None
    assert _count(draw_scatter(with_pick), PICK_COLOUR) > _count(draw_scatter(without),
                                                                  PICK_COLOUR)


def test_the_tolerance_line_is_at_the_first_guidance_base_row():
    result = _two_candidates()
    first = result.base_for(result.config["guidances"][0])
    assert tolerance_line(result) == first.clip_t * (1 - result.config["clip_t_tolerance"])
    result.base = []
    assert tolerance_line(result) is None


@pytest.mark.parametrize("cells, bases", [
    ([cell()], [base()]),  # one cell
    ([cell(unet=u, dino=0.5, clip_t=0.25) for u in (0.6, 1.0)],
     [base(dino=0.5, clip_t=0.25)]),  # every value equal
    ([cell(dino=None), cell(unet=0.5, clip_t=None), cell(unet=0.8)], [base(dino=None)]),
    ([cell(dino=None, clip_t=None)], []),  # nothing to plot
    ([], []),
])
def test_degenerate_tables_still_draw(cells, bases):
    image = draw_scatter(sweep(cells, bases), size=(400, 260))
    assert image.size == (400, 260)
    assert len(image.getcolors(maxcolors=1 << 16)) > 1


def test_face_sweeps_plot_face_identity():
    cells = [cell(unet=0.6, dino=0.5, face=None), cell(unet=1.0, face=0.6, clip_t=0.255)]
    result = sweep(cells, [base(face=0.1)], uses_face=True)
    image = draw_scatter(result)
    assert _count(image, candidate_colours(result)["final"]) > 20
