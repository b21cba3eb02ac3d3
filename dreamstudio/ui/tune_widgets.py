"""The Tune tab's widgets: the run and its LoRAs to try, the values to sweep (TuneConfig's
names), the buttons, and the result (plot, table, recommendation), in one TuneWidgets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import gradio as gr

from ..config import default_of
from ..studio import Studio, TuneConfig
from .evaluate_tab import scorer_choices
from .generate_text import VALUES_HELP
from .tune_text import IDLE, tolerance_percent, values_text

# The sweep's value boxes: TuneConfig field -> the grid axis whose syntax and limits it takes.
VALUE_AXES = {"unet_scales": "unet_scale", "text_encoder_scales": "text_encoder_scale",
              "guidances": "guidance"}
_HELP = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TuneConfig)}
_CHOICES = {f.name: f.metadata.get("choices") for f in dataclasses.fields(TuneConfig)}
VALUES_SYNTAX = VALUES_HELP.split(" Samplers")[0]  # the grid's syntax, without its limits


@dataclass
class TuneWidgets:
    subject: gr.Dropdown
    run: gr.Dropdown
    refresh: gr.Button
    candidates: gr.CheckboxGroup
    settings: dict[str, gr.components.Component]  # TuneConfig's names
    estimate_btn: gr.Button
    run_btn: gr.Button
    stop_btn: gr.Button
    status: gr.Markdown
    last_image: gr.Image
    plot: gr.Image
    table: gr.Dataframe
    summary: gr.Markdown
    files: gr.File
    use_btn: gr.Button
    use_note: gr.Markdown

    @property
    def result_outputs(self) -> list:
        return [self.plot, self.table, self.summary, self.files]


def _default(name: str):
    return default_of(TuneConfig, name)


def _settings(studio: Studio) -> dict[str, gr.components.Component]:
    w: dict[str, gr.components.Component] = {}
    labels = {"unet_scales": "UNet scales", "text_encoder_scales": "Text-encoder scales",
              "guidances": "Guidance values"}
    for name in VALUE_AXES:
        w[name] = gr.Textbox(values_text(_default(name)), label=labels[name],
                             info=f"{_HELP[name]} {VALUES_SYNTAX}")
    with gr.Row():
        w["prompt_set"] = gr.Radio(list(_CHOICES["prompt_set"]), value=_default("prompt_set"),
                                   label="Prompt set", info=_HELP["prompt_set"])
        w["face_identity"] = gr.Radio(list(_CHOICES["face_identity"]),
                                      value=_default("face_identity"), label="Face identity",
                                      info=_HELP["face_identity"])
    with gr.Row():
        w["images_per_prompt"] = gr.Slider(1, 8, value=_default("images_per_prompt"), step=1,
                                           label="Images per prompt",
                                           info=_HELP["images_per_prompt"])
        w["steps"] = gr.Slider(1, 150, value=_default("steps"), step=1, label="Steps",
                               info=_HELP["steps"])
    with gr.Row():
        w["leak_images"] = gr.Slider(0, 8, value=_default("leak_images"), step=1,
                                     label="Leak images", info=_HELP["leak_images"])
        w["clip_t_tolerance"] = gr.Slider(
            0, 20, value=tolerance_percent(_default("clip_t_tolerance")), step=0.5,
            label="CLIP-T tolerance (%)",
            info="How far below the base model's CLIP-T (at the same guidance) a "
                 "recommended cell may fall, in percent.")
    with gr.Accordion("Scoring models", open=False):
        for name, label in (("dino_model", "DINO model"), ("clip_model", "CLIP model")):
            choices = scorer_choices(studio, name)
            flag = "--" + name.replace("_", "-")
            w[name] = gr.Dropdown(choices, value=choices[0], label=label,
                                  allow_custom_value=False,
                                  info=f"{_HELP[name]} Others are added when the app is "
                                       f"started (app.py {flag} ID_OR_FOLDER).")
    return w


def build_widgets(studio: Studio, subjects: list[str], subject: str | None, runs: list[str],
                  run: str | None, candidates: list[tuple[str, str]],
                  chosen: list[str]) -> TuneWidgets:
    """The tab's widgets, showing `subject`'s run `run` with its `candidates` (label, name)
    and the `chosen` names ticked."""
    gr.Markdown(
        "Find the best LoRA and sliders for a subject: every picked LoRA (the final one and "
        "any checkpoint) is drawn with every combination of the values below, the same "
        "prompts and seeds each time, next to the base model, and every cell is scored. "
        "Images already drawn are reused when a sweep is run again or widened."
    )
    w: dict = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            with gr.Row(equal_height=True):
                w["subject"] = gr.Dropdown(subjects, value=subject, label="Subject", scale=3,
                                           allow_custom_value=True,
                                           info="A subject with a trained run.")
                w["run"] = gr.Dropdown(runs, value=run, label="Run", scale=3,
                                       allow_custom_value=True,
                                       info="One of the subject's training runs.")
                w["refresh"] = gr.Button("↻", scale=0, min_width=48, size="lg")
            w["candidates"] = gr.CheckboxGroup(
                candidates, value=chosen, label="LoRAs to try",
                info="The run's final LoRA and each checkpoint it saved.")
            w["settings"] = _settings(studio)
            with gr.Row():
                w["estimate_btn"] = gr.Button("Estimate", scale=1)
                w["run_btn"] = gr.Button("Run sweep", variant="primary", scale=2)
                w["stop_btn"] = gr.Button("Stop", variant="stop", scale=1)
            w["status"] = gr.Markdown(IDLE)
            w["last_image"] = gr.Image(label="Last image drawn", type="pil", height=200,
                                       interactive=False)
        with gr.Column(scale=1, min_width=340):
            w["plot"] = gr.Image(label="Subject fidelity vs prompt fidelity", type="filepath",
                                 interactive=False)
            w["summary"] = gr.Markdown("The recommendation appears here after a sweep.")
            with gr.Row():
                w["use_btn"] = gr.Button("Use this in Generate", variant="primary")
            w["use_note"] = gr.Markdown()
            w["table"] = gr.Dataframe(label="Every cell, every score", interactive=False,
                                      wrap=True, max_height=400)
            w["files"] = gr.File(label="Result files (tune.json, tune.csv, tune.png)",
                                 file_count="multiple", interactive=False)
    return TuneWidgets(**w)
