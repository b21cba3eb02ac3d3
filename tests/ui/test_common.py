"""What every tab relies on: widgets start from the config defaults, handlers turn user
errors into a message in their own message widget, and the pure Data tab texts."""

from __future__ import annotations

import dataclasses

import gradio as gr
import pytest

from dreamstudio.config import GenerateConfig, PrepareConfig, TrainConfig
from dreamstudio.data.manifest import PhotoResult, PrepareReport
from dreamstudio.errors import InputError
from dreamstudio.evaluate.evaluate import EvalConfig
from dreamstudio.studio import Studio
from dreamstudio.ui import data_text
from dreamstudio.ui.common import guarded


class _Handlers:
    def __init__(self, ui):
        self.ui = ui

    @guarded("caption")
    def refuse(self, text: str):
        raise InputError(f"No good: {text}")

    @guarded(lambda ui: ui.form["note"])
    def refuse_into_form(self):
        raise InputError("Not here")

    @guarded("caption")
    def crash(self):
        raise RuntimeError("disk on fire\nsecond line")

    @guarded("caption")
    def fine(self):
        return {self.ui.gallery: ["a.png"]}


def test_a_user_error_becomes_the_message_widgets_text_and_nothing_else():
    with gr.Blocks():
        ui = type("UI", (), {"caption": gr.Markdown(), "gallery": gr.Gallery(),
                             "form": {"note": gr.Markdown()}})()
    handlers = _Handlers(ui)
    with pytest.warns(UserWarning, match="No good: x"):  # the toast, outside a page
        assert handlers.refuse("x") == {ui.caption: "⚠️ No good: x"}
    with pytest.warns(UserWarning):
        assert handlers.refuse_into_form() == {ui.form["note"]: "⚠️ Not here"}
    assert handlers.fine() == {ui.gallery: ["a.png"]}
    with pytest.raises(gr.Error) as caught:  # a bug: short, pointing at the terminal log
        handlers.crash()
    assert "RuntimeError: disk on fire)" in str(caught.value.message)
    assert "second line" not in str(caught.value.message)


def _values(build, studio: Studio) -> dict[str, object]:
    """Label -> initial value of every labelled widget of the tab `build` makes."""
    with gr.Blocks() as page:
        build(studio)
    return {b.label: b.value for b in page.blocks.values()
            if getattr(b, "label", None) and hasattr(b, "value")}


def test_the_widgets_start_from_the_config_defaults(tmp_path):
    from dreamstudio.ui.data_tab import build_data_tab
    from dreamstudio.ui.evaluate_tab import build_evaluate_tab
    from dreamstudio.ui.generate_tab import build_generate_tab
    from dreamstudio.ui.train_tab import build_train_tab

    studio = Studio(tmp_path / "ws", model=str(tmp_path / "no-model"))
    labels = {
        build_train_tab: (TrainConfig, {
            "Steps": "steps", "UNet learning rate": "learning_rate",
            "Text-encoder learning rate": "text_encoder_lr", "LoRA rank": "rank",
            "Batch size": "batch_size", "Number of class images": "num_class_images",
            "Prior loss weight": "prior_loss_weight", "Random flip": "flip",
            "Train the text encoder too": "train_text_encoder", "Seed": "seed",
            "Checkpoints to keep": "keep_checkpoints", "Warm-up steps": "lr_warmup_steps",
            "Checkpoint every (steps)": "checkpoint_every",
            "Validation image every (steps)": "validation_every",
            "Learning-rate schedule": "lr_scheduler", "Mixed precision": "mixed_precision",
            "Export for AUTOMATIC1111 / ComfyUI": "export_kohya"}),
        build_generate_tab: (GenerateConfig, {
            "Guidance": "guidance", "Steps": "steps", "Seed": "seed", "Sampler": "sampler",
            "LoRA strength (UNet)": "unet_scale", "Images": "num_images",
            "LoRA strength (text encoder)": "text_encoder_scale"}),
        build_evaluate_tab: (EvalConfig, {
            "Images per prompt": "images_per_prompt", "Steps": "steps",
            "DINO model": "dino_model", "CLIP model": "clip_model"}),
        build_data_tab: (PrepareConfig, {
            "Image size (pixels)": "size", "Face margin": "face_margin", "Crop mode": "mode"}),
    }
    for build, (config, fields) in labels.items():
        values = _values(build, studio)
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        assert {label: values[label] for label in fields} == {
            label: defaults[name] for label, name in fields.items()}, build.__name__


# ---- the Data tab's texts ------------------------------------------------------------

def _result(name: str, **changes) -> PhotoResult:
    return PhotoResult(source=f"{name}.jpg", kept=True, output=f"{name}.png",
                       crop_box=[10, 20, 310, 320], image_size=[400, 600], **changes)


def test_the_summary_says_whether_the_subject_is_ready():
    photos = [_result(n) for n in ("a", "b", "c")]
    rejected = PhotoResult(source="empty.jpg", kept=False, reason="empty file (0 bytes)")
    report = PrepareReport(photos + [rejected], PrepareConfig(mode="object", size=64))
    text = data_text.summary("rex", report)
    assert text.startswith("**rex**: 3 photos kept, 1 not used (object mode, 64 px).")
    assert "Ready to train" in text
    report.excluded = ["b.png"]
    text = data_text.summary("rex", report)
    assert "left 1 out of training, so 2 will be used" in text and "at least 3" in text
    assert data_text.rejected_table(report).values.tolist() == [
        ["empty.jpg", "empty file (0 bytes)"]]
    labels = [label for label, _ in data_text.photo_choices(report)]
    assert labels == ["1. a.jpg", "2. b.jpg (left out)", "3. c.jpg"]


def test_a_photos_review_text_and_crop_sliders():
    result = _result("a", faces=[{"box": [0, 0, 1, 1]}, {"box": [2, 2, 3, 3]}], face_index=1)
    report = PrepareReport([result])
    assert data_text.photo_text(report, result).startswith(
        "**a.jpg**: 400×600 px, crop 300 px at (10, 20), around face 2.")
    assert data_text.crop_sliders(result) == (
        {"value": 10, "maximum": 400}, {"value": 20, "maximum": 600},
        {"value": 300, "maximum": 400})
    assert data_text.face_choices(result) == {
        "choices": [("Face 1 (largest)", 1), ("Face 2", 2)], "value": 2, "visible": True}
    assert data_text.face_choices(_result("b"))["visible"] is False


def test_the_summary_names_object_mode_when_no_photo_has_a_face():
    from dreamstudio.data.checks import review_warnings

    rejected = [PhotoResult(source=f"{n}.jpg", kept=False, reason="no face found")
                for n in ("a", "b", "c")]
    report = PrepareReport(rejected, PrepareConfig(mode="face", size=64))
    review_warnings(report)
    text = data_text.summary("rex", report)
    assert "face mode is for people" in text and "**Object or pet**" in text
    assert "add more" not in text.lower()
    # One photo with a face: the others are just photos without one, and more are needed.
    report.results.append(_result("d", faces=[{"box": [0, 0, 9, 9]}], face_index=0))
    review_warnings(report)
    text = data_text.summary("rex", report)
    assert "face mode is for people" not in text and "add more" in text
