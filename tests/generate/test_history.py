"""History: earlier images listed from their PNGs, settings read back for the controls."""

from __future__ import annotations

from PIL import Image

from dreamstudio.config import GenerateConfig
from dreamstudio.generate.history import list_history, settings_from
from tests.support.history import PARAMS, save_generated


def test_newest_first_with_their_settings_and_foreign_files_skipped(tmp_path):
    old = save_generated(tmp_path, 1_000, seed=1)
    new = save_generated(tmp_path, 3_000, seed=3)
    grid = save_generated(tmp_path, 2_000, seed=2, grid={
        "x": {"axis": "unet_scale", "label": "LoRA UNet scale", "values": [0.0, 1.0]},
        "y": None})
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")  # no DreamStudio parameters
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "notes.txt").write_text("not an image")

    items = list_history(tmp_path)
    assert [i.path for i in items] == [new, grid, old]
    assert items[0].params["seed"] == 3 and not items[0].is_grid
    assert items[1].is_grid and "grid: LoRA UNet scale" in items[1].caption()
    assert "LoRA 0.7/0.3" in items[0].caption()
    assert [i.path for i in list_history(tmp_path, limit=2)] == [new, grid]
    assert list_history(tmp_path / "missing") == []


def test_settings_go_back_to_the_controls_and_old_sampler_names_fall_back(tmp_path):
    settings = settings_from(PARAMS)
    assert settings == {
        "prompt": "a photo of sks dog", "negative_prompt": "blurry", "unet_scale": 0.7,
        "text_encoder_scale": 0.3, "guidance": 5.0, "steps": 25, "seed": 11, "height": 96,
        "width": 64, "sampler": "Euler a", "lora_dir": "/ws/subjects/dog/loras/run1",
        "precision": "auto",  # PARAMS predate the precision setting
    }
    assert settings_from({**PARAMS, "precision": "fp32"})["precision"] == "fp32"
    # PNGs from before samplers were selectable stored the scheduler's class name.
    assert settings_from({**PARAMS, "sampler": "PNDMScheduler"})["sampler"] == "Default"
    base = settings_from({"prompt": "a dog", "lora_dir": None, "seed": 4})
    assert base["lora_dir"] is None and base["seed"] == 4 and base["height"] == 0
    grid = {"x": {"axis": "seed", "label": "Seed", "values": [1, 2]}, "y": None}
    assert settings_from({**PARAMS, "grid": grid})["grid"] == grid


def test_settings_a_png_lacks_are_the_generate_defaults():
    settings = settings_from({"prompt": "a dog"})
    defaults = GenerateConfig(prompt="a dog")
    for name in ("negative_prompt", "unet_scale", "text_encoder_scale", "guidance", "steps",
                 "seed", "sampler", "precision"):
        assert settings[name] == getattr(defaults, name), name
        assert type(settings[name]) is type(getattr(defaults, name)), name

