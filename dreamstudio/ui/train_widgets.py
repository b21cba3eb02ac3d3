"""The Train tab's widgets: the settings form (train_form.py), the buttons and the
progress column, gathered in one TrainWidgets that the handlers update."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..config import TrainConfig, default_of
from ..studio import Studio
from .train_form import (
    build_advanced,
    build_form,
    build_pivotal,
    build_prior_preservation,
    build_training_settings,
)
from .train_status import fidelity_frame, fidelity_markdown, loss_frame


@dataclass
class TrainWidgets:
    form: dict[str, gr.components.Component]  # keyed by setting name (TrainConfig's)
    start_btn: gr.Button
    resume_btn: gr.Button
    cancel_btn: gr.Button
    message: gr.Markdown
    status: gr.Markdown
    validation: gr.Gallery
    plot: gr.LinePlot
    fidelity_plot: gr.LinePlot  # scored checkpoints (score_checkpoints)
    fidelity: gr.Markdown  # the best step so far
    keep_btn: gr.Button  # keep the best checkpoint as a LoRA
    last: gr.State  # what the last timer tick showed, to send only what changed
    presses: gr.State  # presses of Suggest, so each shows new words


def build_widgets(studio: Studio, status_text: str) -> TrainWidgets:
    gr.Markdown(
        f"Teach the model your subject. On a GPU {default_of(TrainConfig, 'steps')} steps "
        "take a few minutes; on a CPU expect hours at 512 px. You can keep using the other "
        "tabs while it trains."
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=360):
            form = build_form(studio)
            build_prior_preservation(form)
            build_training_settings(studio, form)
            build_pivotal(form)
            build_advanced(form)
            with gr.Row():
                start_btn = gr.Button("Start training", variant="primary")
                resume_btn = gr.Button("Resume")
                cancel_btn = gr.Button("Cancel", variant="stop")
        with gr.Column(scale=1, min_width=360):
            message = gr.Markdown()
            status = gr.Markdown(status_text)
            validation = gr.Gallery(
                label="Validation images (the LoRA so far, same seed each time)", columns=4,
                height=260, object_fit="contain", allow_preview=True,
            )
            plot = gr.LinePlot(
                loss_frame([], []), x="step", y="loss", label="Training loss",
                x_title="step", y_title="loss",
            )
            gr.Markdown(
                "The loss jumps around from step to step (each step uses a random noise "
                "level); a slow downward drift is all you should expect. The validation "
                "images show better whether the subject is being learned."
            )
            fidelity_plot = gr.LinePlot(
                fidelity_frame([]), x="step", y="score", color="metric",
                label="Scored checkpoints: likeness (DINO, CLIP-I) and prompt fit (CLIP-T)",
                x_title="step", y_title="score",
            )
            fidelity = gr.Markdown(fidelity_markdown([]))
            keep_btn = gr.Button("Keep the best checkpoint as a LoRA", interactive=False)
    for name, component in form.items():  # stable ids for browser tests and custom CSS
        component.elem_id = component.elem_id or f"train-{name.replace('_', '-')}"
    return TrainWidgets(form=form, start_btn=start_btn, resume_btn=resume_btn,
                        cancel_btn=cancel_btn, message=message, status=status,
                        validation=validation, plot=plot, fidelity_plot=fidelity_plot,
                        fidelity=fidelity, keep_btn=keep_btn, last=gr.State(None),
                        presses=gr.State(0))
