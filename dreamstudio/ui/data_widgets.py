"""The Data tab's widgets: the subject and upload column, the crops, and the review panel
of one photo, gathered in one DataWidgets that the handlers update."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..config import default_of
from ..studio import PrepareConfig, Studio
from . import data_text as text
from .common import subject_choices

MODE_CHOICES = [
    ("Person: crop around the face", "face"),
    ("Object or pet: centre square", "object"),
]


@dataclass
class DataWidgets:
    subject: gr.Dropdown
    files: gr.File
    mode: gr.Radio
    size: gr.Slider
    margin: gr.Slider
    prepare_btn: gr.Button
    new_name: gr.Textbox
    rename_btn: gr.Button
    confirm: gr.Checkbox
    delete_btn: gr.Button
    subject_message: gr.Markdown
    summary: gr.Markdown
    gallery: gr.Gallery
    rejected: gr.Dataframe
    # Reviewing one photo
    photo: gr.Dropdown
    photo_text: gr.Markdown
    excluded: gr.Checkbox
    held_out: gr.Checkbox
    caption: gr.Textbox
    save_caption: gr.Button
    face: gr.Dropdown
    x: gr.Slider
    y: gr.Slider
    side: gr.Slider
    apply: gr.Button
    reset: gr.Button
    overview: gr.Image
    crop: gr.Image

    @property
    def photo_view(self) -> list:
        """What showing one photo fills."""
        return [self.photo_text, self.excluded, self.held_out, self.caption, self.face, self.x,
                self.y, self.side, self.overview, self.crop]

    @property
    def after_crop(self) -> list:
        """What a crop edit fills: the photo's view, the summary, gallery and picker."""
        return [self.photo_text, self.summary, self.gallery, self.photo, self.face, self.x,
                self.y, self.side, self.overview, self.crop]


def _review_panel() -> dict[str, gr.components.Component]:
    w: dict[str, gr.components.Component] = {}
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            w["photo"] = gr.Dropdown(
                [], value=None, label="Photo to review", allow_custom_value=True,
                info="Pick a training image (or click it in the gallery) to see its warnings, "
                     "leave it out or change its crop.",
            )
            w["photo_text"] = gr.Markdown(text.NO_PHOTO)
            w["excluded"] = gr.Checkbox(
                False, label="Leave this photo out of training",
                info="The photo stays here and can be taken back in by unticking this.",
            )
            w["held_out"] = gr.Checkbox(
                False, label="For scoring only",
                info="Never trained on: evaluation compares the LoRA's images with these "
                     "photos, which it has not seen. By default one photo in six (none for "
                     "fewer than six).",
            )
            w["caption"] = gr.Textbox(
                label="Caption (optional)", lines=1, max_lines=1,
                placeholder="e.g. a dog on a sofa, wearing a red collar",
                info=text.CAPTION_INFO,
            )
            w["save_caption"] = gr.Button("Save caption", size="sm")
            w["face"] = gr.Dropdown(
                [], value=None, label="Face to crop around", visible=False,
                allow_custom_value=True,
                info="Several faces were found (numbered in blue on the photo): "
                     "pick your subject's.",
            )
            w["x"] = gr.Slider(
                0, text.SLIDER_LIMIT, value=0, step=1, label="Crop left edge (x)",
                info="Pixels from the left edge of the original photo.",
            )
            w["y"] = gr.Slider(
                0, text.SLIDER_LIMIT, value=0, step=1, label="Crop top edge (y)",
                info="Pixels from the top edge of the original photo.",
            )
            w["side"] = gr.Slider(
                8, text.SLIDER_LIMIT, value=default_of(PrepareConfig, "size"), step=1,
                label="Crop size",
                info="Side of the square in the original photo's pixels. Below half the "
                     "image size the crop is enlarged and looks soft.",
            )
            with gr.Row():
                w["apply"] = gr.Button("Apply this crop", variant="primary")
                w["reset"] = gr.Button("Automatic crop")
        with gr.Column(scale=3, min_width=320), gr.Row():
            w["overview"] = gr.Image(
                label="Whole photo, crop in yellow", type="pil",
                interactive=False, height=320,
            )
            w["crop"] = gr.Image(label="Crop as training sees it", type="pil",
                                 interactive=False, height=320)
    return w


def build_widgets(studio: Studio) -> DataWidgets:
    gr.Markdown(
        "Upload 3-20 photos of **one** subject: different angles, light and backgrounds, "
        "nothing else prominent in the picture. New photos are added to the subject's earlier "
        "ones; each becomes a square training image, and photos that cannot be used are "
        "listed with the reason. Then review the crops below: warnings point at blurry, "
        "small or near-duplicate photos."
    )
    w: dict[str, gr.components.Component] = {}
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            w["subject"] = gr.Dropdown(
                choices=subject_choices(studio), value=None, allow_custom_value=True,
                label="Subject name",
                info="Type a new name (e.g. 'my-dog') or pick a subject you prepared before.",
            )
            # No file_types: Gradio would refuse the whole upload over one file it does not
            # take for an image, naming none; the backend judges each file and says why.
            w["files"] = gr.File(label="Photos to add", file_count="multiple", height=160)
            w["mode"] = gr.Radio(
                MODE_CHOICES, value=default_of(PrepareConfig, "mode"), label="Crop mode",
                info="Person: finds the face and frames head and shoulders. "
                     "Object or pet: keeps the largest square in the middle of each photo.",
            )
            w["size"] = gr.Slider(
                64, 1024, value=default_of(PrepareConfig, "size"), step=64,
                label="Image size (pixels)",
                info="Side of the square training images: 512 for SD 1.5, 768 for SD 2 (768).",
            )
            w["margin"] = gr.Slider(
                1.0, 4.0, value=default_of(PrepareConfig, "face_margin"), step=0.1,
                label="Face margin",
                info="Crop size as a multiple of the face: 1 = face only, "
                     "2.2 = head and shoulders (recommended).",
            )
            w["prepare_btn"] = gr.Button("Prepare photos", variant="primary")
            with gr.Accordion("Rename or delete this subject", open=False):
                w["new_name"] = gr.Textbox(
                    label="New name", placeholder="e.g. rex",
                    info="Its photos, LoRAs and generated images move with it.",
                )
                w["rename_btn"] = gr.Button("Rename subject")
                w["confirm"] = gr.Checkbox(
                    False, label="Yes, delete this subject",
                    info="Deletes its photos, crops, LoRAs and generated images for good. "
                         "Class images shared with other subjects stay.",
                )
                w["delete_btn"] = gr.Button("Delete subject", variant="stop")
                w["subject_message"] = gr.Markdown()
        with gr.Column(scale=3, min_width=320):
            w["summary"] = gr.Markdown(text.NO_SUBJECT)
            w["gallery"] = gr.Gallery(
                label="Training images (click one to review it)", columns=4, height=420,
                object_fit="contain", allow_preview=False,
            )
            w["rejected"] = gr.Dataframe(
                value=text.rejected_table(None), headers=text.REJECTED_HEADERS,
                label="Photos not used", interactive=False, wrap=True,
            )
    with gr.Accordion("Review a photo", open=True):
        w.update(_review_panel())
    return DataWidgets(**w)
