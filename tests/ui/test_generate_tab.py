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


# ---- Generating: the handlers stream the picture forming, then the saved images ----------

@pytest.fixture
def tiny_tab(tmp_path, tiny_model):
    studio = Studio(tmp_path / "ws", model=str(tiny_model), device="cpu")
    with gr.Blocks():
        ui = build_widgets(studio, [BASE_MODEL], BASE_MODEL, "", ([], [], ""))
    return studio, ui, GenerateHandlers(studio, ui)


def _settings(**changes) -> dict:
    return {"lora": BASE_MODEL, "prompt": "a photo of a dog", "negative_prompt": "",
            "unet_scale": 1.0, "text_encoder_scale": 1.0, "guidance": 7.5, "steps": 6,
            "seed": 1, "num_images": 1, "height": 64, "width": 64, "sampler": "Euler a",
            "preview_every": 2, **changes}


def test_generate_streams_previews_and_progress_before_the_saved_image(tiny_tab):
    from PIL import Image

    _, ui, handlers = tiny_tab
    updates = list(handlers.generate(**_settings()))
    *streamed, final = updates
    previews = [u[ui.gallery] for u in streamed if ui.gallery in u]
    assert previews, "no preview before the finished image"
    assert all(isinstance(picture, Image.Image) and picture.size == (64, 64)
               for gallery in previews for picture, _ in gallery)
    assert "step 2/6" in previews[0][0][1] or "step 4/6" in previews[0][0][1]
    texts = [u[ui.caption] for u in streamed if ui.caption in u]
    assert texts[0].startswith("Loading the model")
    assert any(t.startswith("step ") and "image 1 of 1" in t for t in texts)
    assert any("left" in t for t in texts)  # the time left, once the pace is known
    [(path, caption)] = final[ui.gallery]
    assert path.endswith(".png") and caption == "seed 1"
    assert final[ui.caption].startswith("1 image(s), 64x64 px")


def test_no_previews_when_the_cadence_is_zero_and_errors_still_show(tiny_tab):
    _, ui, handlers = tiny_tab
    *streamed, final = handlers.generate(**_settings(preview_every=0, num_images=2))
    assert not any(ui.gallery in u for u in streamed)
    assert len(final[ui.gallery]) == 2
    assert any("images 1-2 of 2" in u.get(ui.caption, "") for u in streamed)
    with pytest.warns(UserWarning, match="prompt is empty"):
        [update] = handlers.generate(**_settings(prompt=" "))
    assert update[ui.caption].startswith("⚠️")


def test_the_grid_streams_each_cell_forming(tiny_tab):
    _, ui, handlers = tiny_tab
    grid = {"x_axis": "seed", "x_values": "1, 2", "y_axis": "none", "y_values": ""}
    *streamed, final = handlers.grid(**_settings(steps=4), **grid)
    cells = [u[ui.gallery] for u in streamed if ui.gallery in u]
    assert len(cells) >= 1 and all(len(gallery) == 1 for gallery in cells)
    assert any("image 2 of 2" in u.get(ui.caption, "") for u in streamed)
    assert final[ui.caption].startswith("Grid of 2 images")


def test_stop_ends_a_streaming_generation_and_closing_the_page_stops_it_too(tiny_tab):
    studio, ui, handlers = tiny_tab
    run = handlers.generate(**_settings(steps=60, preview_every=1))
    for update in run:
        if ui.gallery in update:
            assert "Stopping" in handlers.stop()[ui.caption]
            break
    *_, final = run
    assert final[ui.caption].startswith("⏹️ Stopped")
    assert not list(studio.workspace.generated_dir(None).glob("*.png"))
    # A page that goes away closes the handler: the worker is stopped, not left running.
    run = handlers.generate(**_settings(steps=60, preview_every=1))
    next(run), next(run)
    run.close()
    assert "nothing to stop" in handlers.stop()[ui.caption]
    assert not list(studio.workspace.generated_dir(None).glob("*.png"))


def test_progress_lines_say_step_images_and_time_left():
    from dreamstudio.studio import GridProgress
    from dreamstudio.ui import generate_text as text

    assert text.draw_progress(12, 20, 1, 4, 4, 35.2) == (
        "step 12/20 · images 1-4 of 4 · about 35 s left")
    assert text.draw_progress(3, 20, 1, 1, 1, None) == "step 3/20 · image 1 of 1"
    assert text.grid_progress(GridProgress(2, 12, 5, 20, "", 130)) == (
        "step 5/20 · image 3 of 12 · about 2 min 10 s left")
    assert text.grid_progress(GridProgress(12, 12)) == "12/12 images done"
