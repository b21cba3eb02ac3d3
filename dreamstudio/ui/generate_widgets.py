"""The Generate tab's widgets: LoRA picker, settings (GenerateConfig's names), the X/Y
grid controls, the gallery and the history, gathered in one GenerateWidgets."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..config import GENERATE_PRECISIONS, GenerateConfig, default_of
from ..studio import AXES, MAX_CELLS, NO_AXIS, SAMPLER_NAMES, Studio
from .common import SD15_SIZE, model_image_size
from .generate_text import VALUES_HELP

AXIS_CHOICES = [(spec.label, name) for name, spec in AXES.items()]


@dataclass
class GenerateWidgets:
    lora: gr.Dropdown
    refresh: gr.Button
    about: gr.Markdown
    settings: dict[str, gr.components.Component]  # GenerateConfig's names (plus num_images)
    generate_btn: gr.Button
    stop_btn: gr.Button
    grid: dict[str, gr.components.Component]  # x_axis, x_values, y_axis, y_values
    grid_btn: gr.Button
    gallery: gr.Gallery
    caption: gr.Markdown
    history_note: gr.Markdown
    history: gr.Gallery
    history_files: gr.State  # the file names behind the history gallery, in its order
    history_refresh: gr.Button
    known: gr.State  # the labels the page has seen, to spot new LoRAs

    @property
    def history_outputs(self) -> list:
        return [self.history, self.history_files, self.history_note]


def _default(name: str):
    return default_of(GenerateConfig, name)


# What the text-encoder slider does on SDXL, where one LoRA scale drives both encoders.
SDXL_TEXT_ENCODER_INFO = ("How strongly the subject's word is applied; 0 = off. SDXL: one "
                          "text-encoder scale applies to both text encoders.")


def _size_slider(name: str, native: int, value: int | None) -> gr.Slider:
    return gr.Slider(0, 1024, value=value or 0, step=8, label=f"{name} (pixels)",
                     info=f"0 = the model's own size ({native} px); else 64-1024.")


def _settings(studio: Studio) -> dict[str, gr.components.Component]:
    w: dict[str, gr.components.Component] = {}
    family = studio.generate_defaults()  # the base model's family's own defaults

    def start(name: str):
        return family.get(name, _default(name))

    native = model_image_size(studio.model, family.get("height", SD15_SIZE))
    w["prompt"] = gr.Textbox(
        label="Prompt", lines=2, placeholder="a photo of sks dog on a beach at sunset",
        info="Describe the picture; include your subject's words (e.g. 'sks dog').",
    )
    w["negative_prompt"] = gr.Textbox(
        _default("negative_prompt"), label="Negative prompt", placeholder="blurry, low quality",
        info="What to keep out of the picture (optional).",
    )
    with gr.Row():
        w["unet_scale"] = gr.Slider(
            0, 2, value=_default("unet_scale"), step=0.05, label="LoRA strength (UNet)",
            info="How strongly the subject's look is applied; 0 = off.",
        )
        w["text_encoder_scale"] = gr.Slider(
            0, 2, value=_default("text_encoder_scale"), step=0.05,
            label="LoRA strength (text encoder)",
            info=(SDXL_TEXT_ENCODER_INFO if studio.family_name == "SDXL"
                  else "How strongly the subject's word is applied; 0 = off."),
        )
    with gr.Row():
        w["guidance"] = gr.Slider(
            1, 20, value=start("guidance"), step=0.5, label="Guidance",
            info="How literally to follow the prompt; 5-9 is usual.",
        )
        w["steps"] = gr.Slider(
            1, 100, value=_default("steps"), step=1, label="Steps",
            info="Denoising steps: more is slower and a little finer; 25-40 is usual.",
        )
    w["sampler"] = gr.Dropdown(
        list(SAMPLER_NAMES), value=_default("sampler"), label="Sampler",
        info="The denoising method. Default = the model's own (PLMS for SD 1.5); "
             "DPM++ 2M Karras looks good in 20-30 steps. Switching reloads nothing.",
    )
    with gr.Row():
        w["seed"] = gr.Number(
            _default("seed"), label="Seed", precision=0, minimum=0,
            info="Same seed + same settings = same picture; image n uses seed + n.",
        )
        w["num_images"] = gr.Slider(1, 8, value=_default("num_images"), step=1,
                                    label="Images", info="How many pictures per click.")
    with gr.Row():
        w["height"] = _size_slider("Height", native, start("height"))
        w["width"] = _size_slider("Width", native, start("width"))
    w["precision"] = gr.Dropdown(
        list(GENERATE_PRECISIONS), value=_default("precision"), label="Precision",
        info="auto = bf16 where the CPU or GPU has bf16 units (about 2.5x faster than fp32 "
             "on such a CPU, the same picture to the eye), fp16 on older GPUs. fp32 = full "
             "precision. Changing it reloads the model once.",
    )
    w["preview_every"] = gr.Slider(
        0, 50, value=_default("preview_every"), step=1, label="Preview every (steps)",
        info="Show the picture forming every N steps; 0 = only the finished picture. "
             "Previews cost next to nothing and never change the picture.",
    )
    return w


def _grid_controls() -> dict[str, gr.components.Component]:
    w: dict[str, gr.components.Component] = {}
    gr.Markdown(
        "Compare settings side by side: every picture uses the same seed and the settings "
        "above, except the two you vary here. The model loads once for the whole grid."
    )
    values_info = VALUES_HELP.format(max_cells=MAX_CELLS)
    with gr.Row():
        w["x_axis"] = gr.Dropdown(
            AXIS_CHOICES, value="unet_scale", label="X axis (columns)", scale=1,
            info="The setting that changes from column to column.",
        )
        w["x_values"] = gr.Textbox(
            "0, 0.5, 1, 1.5", label="X values", scale=2, info=values_info,
        )
    with gr.Row():
        w["y_axis"] = gr.Dropdown(
            [("(none: one row)", NO_AXIS)] + AXIS_CHOICES, value="text_encoder_scale",
            label="Y axis (rows)", scale=1,
            info="The setting that changes from row to row, or none.",
        )
        w["y_values"] = gr.Textbox(
            "0, 0.5, 1", label="Y values", scale=2,
            info="Same syntax as the X values; ignored when the Y axis is none.",
        )
    return w


def build_widgets(studio: Studio, choices: list[str], current: str, about: str,
                  history: tuple[list, list[str], str]) -> GenerateWidgets:
    """The tab's widgets, showing LoRA `current` among `choices` (with its `about` text)
    and its `history` (gallery items, file names, note)."""
    gr.Markdown(
        "Draw pictures with your subject. Sliders take effect on the next click of "
        "**Generate**; changing them reloads nothing, so trying strengths is quick. "
        "To compare strengths side by side, open **X/Y grid**."
    )
    w: dict = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            with gr.Row(equal_height=True):
                w["lora"] = gr.Dropdown(
                    choices, value=current, label="Subject LoRA", scale=5,
                    allow_custom_value=True,  # new runs appear at runtime; checked on use
                    info="A LoRA you trained on the Train tab, or the plain base model.",
                )
                w["refresh"] = gr.Button("↻", scale=0, min_width=48, size="lg")
            w["about"] = gr.Markdown(about)
            w["settings"] = _settings(studio)
            with gr.Row():
                w["generate_btn"] = gr.Button("Generate", variant="primary", scale=2)
                w["stop_btn"] = gr.Button("Stop", variant="stop", scale=1)
            with gr.Accordion("X/Y grid: compare settings side by side", open=False):
                w["grid"] = _grid_controls()
                w["grid_btn"] = gr.Button("Make grid", variant="secondary")
        with gr.Column(scale=1, min_width=340):
            w["gallery"] = gr.Gallery(label="Generated images", columns=2, height=520,
                                      object_fit="contain", format="png")
            w["caption"] = gr.Markdown()
            with gr.Accordion("History of this subject", open=True):
                items, files, note = history
                w["history_note"] = gr.Markdown(note)
                w["history"] = gr.Gallery(
                    items, label="Earlier images (click one to reuse its settings)",
                    columns=4, height=260, object_fit="contain", allow_preview=False,
                )
                w["history_files"] = gr.State(files)
                w["history_refresh"] = gr.Button("↻ Refresh history", size="sm")
    w["known"] = gr.State(choices)
    return GenerateWidgets(**w)
