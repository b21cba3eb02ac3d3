"""The Train and Generate tabs name the base model's family and start from its defaults."""

from __future__ import annotations

import gradio as gr
import pytest

from dreamstudio.config import GenerateConfig, TrainConfig, default_of
from dreamstudio.studio import Studio
from dreamstudio.ui.generate_widgets import SDXL_TEXT_ENCODER_INFO
from dreamstudio.ui.generate_widgets import build_widgets as build_generate
from dreamstudio.ui.loras import BASE_MODEL
from dreamstudio.ui.train_handlers import TrainHandlers
from dreamstudio.ui.train_text import family_markdown
from dreamstudio.ui.train_widgets import build_widgets as build_train

SDXL_ID = "stabilityai/stable-diffusion-xl-base-1.0"  # a Hub id: nothing is loaded


def _train_form(studio: Studio) -> dict:
    with gr.Blocks():
        return build_train(studio, "").form


def _generate_settings(studio: Studio) -> dict:
    with gr.Blocks():
        return build_generate(studio, [BASE_MODEL], BASE_MODEL, "", ([], [], "")).settings


def test_the_family_line_lists_the_defaults_it_starts_from():
    text = family_markdown("SDXL", {"resolution": 1024, "learning_rate": 1e-4,
                                    "text_encoder_lr": 1e-5, "steps": 500})
    assert text.startswith("Base model family: **SDXL**")
    for quoted in ("1024 px", "UNet LR 0.0001", "text-encoder LR 1e-05", "500 steps",
                   "both of its text encoders"):
        assert quoted in text
    assert "**SD 1.x**" in family_markdown("SD 1.x", {})


def test_the_train_tab_on_sdxl_names_it_and_starts_from_its_defaults(tmp_path):
    form = _train_form(Studio(tmp_path / "ws", model=SDXL_ID))
    assert "**SDXL**" in form["family"].value
    assert form["resolution"].value == 1024  # a Hub id is not opened: the family's size
    assert (form["learning_rate"].value, form["text_encoder_lr"].value) == (1e-4, 1e-5)
    assert form["steps"].value == 500
    assert form["preset"].value == "SDXL defaults"
    assert "1024 px" in form["preset_info"].value


def test_the_train_tab_on_sd1_is_as_before(tmp_path, tiny_model):
    form = _train_form(Studio(tmp_path / "ws", model=str(tiny_model)))
    assert "**SD 1.x**" in form["family"].value
    assert form["resolution"].value == 64  # a folder's own size
    assert form["learning_rate"].value == default_of(TrainConfig, "learning_rate")
    assert form["preset"].value == "LoRA notebook defaults"


def test_a_tiny_sdxl_folder_trains_at_its_own_size(tmp_path, tiny_sdxl_model):
    form = _train_form(Studio(tmp_path / "ws", model=str(tiny_sdxl_model)))
    assert "**SDXL**" in form["family"].value and form["resolution"].value == 64
    assert form["learning_rate"].value == 1e-4


def test_sdxl_presets_fill_the_form_with_sdxls_rates(tmp_path):
    studio = Studio(tmp_path / "ws", model=SDXL_ID)
    with gr.Blocks():
        ui = build_train(studio, "")
    handlers = TrainHandlers(studio, ui)
    update = handlers.apply_preset("SDXL person / face", "ohwx")
    values = {name: update[c] for name, c in ui.form.items() if c in update}
    assert values["learning_rate"] == 5e-5 and values["text_encoder_lr"] == 5e-6
    assert "1024 px" in values["preset_info"]


@pytest.mark.parametrize("model, info, guidance, size", [
    (SDXL_ID, SDXL_TEXT_ENCODER_INFO, 5.0, 1024),
    ("tiny", "How strongly the subject's word is applied; 0 = off.",
     default_of(GenerateConfig, "guidance"), 0),
])
def test_the_generate_tab_says_one_scale_drives_both_encoders_on_sdxl(
        tmp_path, tiny_model, model, info, guidance, size):
    model = str(tiny_model) if model == "tiny" else model
    settings = _generate_settings(Studio(tmp_path / "ws", model=model))
    assert settings["text_encoder_scale"].info == info
    assert settings["guidance"].value == guidance
    assert settings["height"].value == settings["width"].value == size
    assert "one text-encoder scale applies to both text encoders" in SDXL_TEXT_ENCODER_INFO
