"""The Generate tab's handlers without a server: what a history click puts back, and the
LoRA picker's choices (newest first picked, one that vanished reported)."""

from __future__ import annotations

import os

import gradio as gr
import pytest

from dreamstudio.generate.history import settings_from
from dreamstudio.lora.files import WEIGHTS_NAME
from dreamstudio.studio import Studio
from dreamstudio.ui.generate_tab import RESTORED, GenerateHandlers, history_view
from dreamstudio.ui.generate_widgets import build_widgets
from dreamstudio.ui.loras import BASE_MODEL
from tests.support.history import PARAMS, save_generated


def _lora(studio: Studio, run: str, mtime: float):
    folder = studio.workspace.run_dir("dog", run)
    folder.mkdir(parents=True)
    (folder / WEIGHTS_NAME).write_bytes(b"")
    os.utime(folder / WEIGHTS_NAME, (mtime, mtime))
    return folder


@pytest.fixture
def tab(tmp_path):
    studio = Studio(tmp_path / "ws", model="/m/tiny")
    with gr.Blocks():
        ui = build_widgets(studio, [BASE_MODEL], BASE_MODEL, "", ([], [], ""))
    return studio, ui, GenerateHandlers(studio, ui)


def test_one_click_on_a_history_image_fills_the_controls(tab):
    studio, ui, handlers = tab
    lora = _lora(studio, "run1", 1_000)
    folder = studio.workspace.generated_dir("dog")
    image = save_generated(folder, 1_000, lora_dir=str(lora))
    grid = save_generated(folder, 2_000, lora_dir=str(lora), grid={
        "x": {"axis": "unet_scale", "label": "LoRA UNet scale", "values": [0.0, 0.5]},
        "y": {"axis": "sampler", "label": "Sampler", "values": ["DDIM", "Euler a"]}})
    gallery, files, note = history_view(studio, "dog / run1")
    assert files == [grid.name, image.name] and "2 earlier image(s)" in note
    assert gallery[0][1].startswith("grid: LoRA UNet scale × Sampler")
    shown = handlers.show_history("dog / run1")
    assert shown == {ui.history: gallery, ui.history_files: files, ui.history_note: note}

    def click(index):
        return handlers.pick_history("dog / run1", files, gr.SelectData(None, {
            "index": index, "value": None}))

    out = click(1)
    restored = {name: out[ui.settings[name]] for name in RESTORED}
    assert restored == {k: v for k, v in settings_from(PARAMS).items() if k in RESTORED}
    assert out[ui.lora] == "dog / run1"
    assert "Sampler: Euler a" in out[ui.history_note] and image.name in out[ui.history_note]
    assert not any(ui.grid[name] in out for name in ui.grid)  # not a grid: axes stay

    out = click(0)
    assert [out[ui.grid[k]] for k in ("x_axis", "x_values", "y_axis", "y_values")] == [
        "unet_scale", "0, 0.5", "sampler", "DDIM, Euler a"]
    # An image of a LoRA deleted since: its settings load, the LoRA choice stays as it was.
    old = studio.workspace.run_dir("dog", "old")
    save_generated(folder, 3_000, lora_dir=str(old), seed=5)
    files = history_view(studio, "dog / run1")[1]
    out = click(0)
    assert out[ui.settings["seed"]] == 5
    assert ui.lora not in out and "no longer exists" in out[ui.history_note]


def test_a_click_on_a_vanished_image_says_so_in_the_note(tab):
    _, ui, handlers = tab
    with pytest.warns(UserWarning, match="no longer listed"):  # the toast, outside a page
        out = handlers.pick_history("dog / run1", [], gr.SelectData(None, {"index": 0,
                                                                           "value": None}))
    assert list(out) == [ui.history_note] and out[ui.history_note].startswith("⚠️")


def test_the_picker_selects_the_newest_lora_and_a_new_one(tab):
    studio, ui, handlers = tab
    assert handlers.load()[ui.lora]["value"] == BASE_MODEL
    _lora(studio, "older", 1_000)
    _lora(studio, "newer", 2_000)
    out = handlers.load()
    assert out[ui.lora]["value"] == "dog / newer"
    assert out[ui.known] == [BASE_MODEL, "dog / newer", "dog / older"]
    # The user's choice stays while nothing new appears; a new LoRA gets selected.
    assert handlers.refresh("dog / older", out[ui.known])[ui.lora]["value"] == "dog / older"
    known = out[ui.known]
    _lora(studio, "a-third", 500)  # written before the others, but new to the page
    assert handlers.refresh("dog / older", known)[ui.lora]["value"] == "dog / a-third"


def test_describing_a_lora_suggests_its_prompt_only_into_an_empty_box(tab):
    import json

    from dreamstudio.lora.files import CONFIG_NAME

    studio, ui, handlers = tab
    lora = _lora(studio, "run1", 1_000)
    (lora / CONFIG_NAME).write_text(json.dumps({
        "config": {"instance_prompt": "a photo of sks dog", "steps": 300, "rank": 4},
        "final_loss": 0.12345, "finished_at": "2024-05-01T10:20:30"}))
    prompt = ui.settings["prompt"]
    out = handlers.describe("dog / run1", "  ")
    assert out[prompt] == "a photo of sks dog"
    assert out[ui.about] == ("**dog / run1**: trained on *'a photo of sks dog'*, 300 steps, "
                             "rank 4, final loss 0.1235, finished 2024-05-01 10:20. Put the "
                             "same words (e.g. 'sks dog') in your prompt.")
    assert prompt not in handlers.describe("dog / run1", "my own prompt")
    assert handlers.describe("dog / gone", "")[ui.about].startswith("This LoRA no longer")
    assert prompt not in handlers.describe(BASE_MODEL, "")
    assert "base model alone" in handlers.describe(BASE_MODEL, "")[ui.about]
