"""X/Y grids without a model: value lists, limits, layout of the labelled image, metadata."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dreamstudio.config import GenerateConfig
from dreamstudio.errors import InputError
from dreamstudio.generate.grid import MAX_CELLS, GridAxis, GridConfig, draw_grid, parse_values
from dreamstudio.generate.png_metadata import a1111_parameters


@pytest.mark.parametrize("axis, text, expected", [
    ("unet_scale", "0, 0.5, 1", [0.0, 0.5, 1.0]),
    ("unet_scale", "0-1 (+0.25)", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("unet_scale", "0-1 [5]", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("unet_scale", "1-0 (-0.5)", [1.0, 0.5, 0.0]),
    ("text_encoder_scale", "0-0.3 (+0.1)", [0.0, 0.1, 0.2, 0.3]),  # no 0.30000000000000004
    ("guidance", "3, 5-9 (+2), 12", [3.0, 5.0, 7.0, 9.0, 12.0]),
    ("steps", "1-4", [1, 2, 3, 4]),
    ("steps", "10-30 [3]", [10, 20, 30]),
    ("seed", "7, 8,  9", [7, 8, 9]),
    ("sampler", "euler a, DDIM, dpm++ 2m karras", ["Euler a", "DDIM", "DPM++ 2M Karras"]),
])
def test_value_lists_and_ranges(axis, text, expected):
    values = parse_values(axis, text)
    assert values == expected
    assert all(type(v) is type(e) for v, e in zip(values, expected, strict=True))


@pytest.mark.parametrize("axis, text, message", [
    ("unet_scale", "", "no values"),
    ("unet_scale", "0, lots", "not a number or a range"),
    ("unet_scale", "0-1 (-0.25)", "never gets from 0 to 1"),
    ("unet_scale", "0-1 (+0)", "never gets"),
    ("unet_scale", "0-1 [1]", r"\[2\] or more"),
    ("unet_scale", "0-2 (+0.01)", f"at most {MAX_CELLS}"),
    ("unet_scale", "0, 2.5", r"LoRA UNet scale values must be 0-2 \(got 2.5\)"),
    ("guidance", "0.5", "CFG scale values must be 1-20"),
    ("steps", "2.5", "whole numbers"),
    ("sampler", "Euler a, Turbo", "unknown name.*Turbo"),
    ("width", "64", "Unknown grid axis"),
])
def test_bad_value_lists_say_what_to_type(axis, text, message):
    with pytest.raises(InputError, match=message):
        parse_values(axis, text)


def test_a_grid_is_checked_as_a_whole(tmp_path):
    base = GenerateConfig(prompt="a dog", lora_dir=tmp_path, num_images=4, seed=5)
    grid = GridConfig(base, GridAxis.parse("unet_scale", "0, 1"),
                      GridAxis.parse("guidance", "3, 7, 11"))
    assert grid.shape == (3, 2) and grid.base.num_images == 1
    cell = grid.cell_config(2, 1)
    assert (cell.unet_scale, cell.guidance, cell.seed, cell.num_images) == (1.0, 11.0, 5, 1)
    assert grid.to_dict()["y"] == {"axis": "guidance", "label": "CFG scale",
                                   "values": [3.0, 7.0, 11.0]}

    with pytest.raises(InputError, match="Both axes vary the CFG scale"):
        GridConfig(base, GridAxis.parse("guidance", "3"), GridAxis.parse("guidance", "7"))
    with pytest.raises(InputError, match=f"72 images .*at most {MAX_CELLS}"):
        GridConfig(base, GridAxis.parse("seed", "1-9"), GridAxis.parse("steps", "1-8"))
    no_lora = GenerateConfig(prompt="a dog")
    with pytest.raises(InputError, match="no LoRA is picked"):
        GridConfig(no_lora, GridAxis.parse("guidance", "3"),
                   GridAxis.parse("text_encoder_scale", "0, 1"))
    single_row = GridConfig(no_lora, GridAxis.parse("seed", "1, 2, 3"))
    assert single_row.shape == (1, 3) and single_row.cell_config(0, 2).seed == 3


def _cell(colour) -> Image.Image:
    return Image.new("RGB", (64, 48), colour)


def test_grid_image_places_cells_edge_to_edge_under_their_labels():
    colours = [[(255, 0, 0), (0, 255, 0), (0, 0, 255)], [(9, 9, 9), (200, 100, 0), None]]
    cells = [[_cell(c) if c else None for c in row] for row in colours]
    image = draw_grid(cells, "LoRA UNet scale", ["0", "0.5", "1"], "CFG scale", ["3", "7"])
    left, top = image.width - 3 * 64, image.height - 2 * 48
    assert left > 0 and top > 0  # room for the row and column labels
    pixels = np.asarray(image)
    for r, row in enumerate(colours):
        for c, colour in enumerate(row):
            block = pixels[top + r * 48: top + (r + 1) * 48, left + c * 64: left + (c + 1) * 64]
            assert (block == (colour or (220, 220, 220))).all(), (r, c)
    # Something is written in the header band over each column and beside each row.
    header, side = pixels[:top, left:], pixels[top:, :left]
    for c in range(3):
        assert (header[:, c * 64:(c + 1) * 64] < 128).any(), f"no label over column {c}"
    for r in range(2):
        assert (side[r * 48:(r + 1) * 48] < 128).any(), f"no label beside row {r}"


def test_long_column_labels_wrap_and_one_row_has_no_side_band():
    cells = [[_cell((0, 0, 0)), _cell((0, 0, 0))]]
    short = draw_grid(cells, "Sampler", ["DDIM", "UniPC"])
    long = draw_grid(cells, "Sampler", ["DPM++ 2M Karras", "Euler a"])
    assert short.width == long.width == 2 * 64
    assert long.height > short.height  # two lines under the title instead of one


def test_grid_metadata_names_its_axes_for_a1111():
    params = {"prompt": "a dog", "steps": 20, "sampler_name": "Euler a", "guidance": 7.0,
              "seed": 3, "width": 512, "height": 512, "model": "/m/sd15",
              "grid": {"x": {"axis": "unet_scale", "label": "LoRA UNet scale",
                             "values": [0.0, 0.5, 1.0]},
                       "y": {"axis": "sampler", "label": "Sampler", "values": ["DDIM", "UniPC"]}}}
    text = a1111_parameters(params)
    assert 'X Type: LoRA UNet scale, X Values: "0, 0.5, 1"' in text
    assert 'Y Type: Sampler, Y Values: "DDIM, UniPC"' in text
    assert "Script: X/Y plot" in text


def test_cli_draws_a_grid_with_a_sampler(tiny_model, tmp_path, capsys):
    from dreamstudio.cli import main
    from dreamstudio.generate.png_metadata import read_parameters
    from tests.support.png import read_a1111_parameters

    common = ["generate", "--model", str(tiny_model), "--prompt", "a dog", "--output",
              str(tmp_path), "--steps", "2", "--height", "64", "--width", "64", "--device",
              "cpu"]
    assert main([*common, "--sampler", "DDIM", "--grid-x", "seed", "--grid-x-values", "1, 2",
                 "--grid-y", "guidance", "--grid-y-values", "3, 9"]) == 0
    [path] = tmp_path.glob("*_grid_*.png")
    assert capsys.readouterr().out.strip() == str(path)
    params = read_parameters(path)
    assert params["sampler"] == "DDIM" and params["grid"]["x"]["values"] == [1, 2]
    assert "Sampler: DDIM" in read_a1111_parameters(path)
    with Image.open(path) as im:
        assert im.width > 2 * 64 and im.height > 2 * 64

    assert main([*common, "--grid-x", "unet_scale", "--grid-x-values", "0, 1"]) == 2
    assert "no LoRA is picked" in capsys.readouterr().err
