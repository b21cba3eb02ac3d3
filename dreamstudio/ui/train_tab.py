"""Train tab: settings for one DreamBooth LoRA run, start/resume/cancel, live progress.

The widgets and how their events reach the handlers (train_handlers.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from ..studio import Studio
from .train_form import FIELDS, FILLABLE
from .train_handlers import TrainHandlers, current_status
from .train_status import status_markdown
from .train_widgets import TrainWidgets, build_widgets

POLL_SECONDS = 1.0
# The start/resume handlers' inputs: what a TrainConfig is made from.
RUN_INPUTS = ("subject", "run_name", "instance_prompt", "prior_preservation", "class_prompt")


@dataclass
class TrainTab:
    subject: gr.Dropdown
    refresh_subjects: Callable  # current subject -> dropdown update with fresh choices


def build_train_tab(studio: Studio) -> TrainTab:
    ui = build_widgets(studio, status_markdown(current_status(studio)[1]))
    handlers = TrainHandlers(studio, ui)
    _wire(handlers, ui)
    return TrainTab(subject=ui.form["subject"], refresh_subjects=handlers.subjects)


def _wire(handlers: TrainHandlers, ui: TrainWidgets) -> None:
    quiet = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}
    w = ui.form
    fillable = [w[k] for k in FILLABLE]
    prompts = [w["instance_prompt"], w["class_prompt"], w["identifier_check"]]
    report_inputs = [w["identifier"], w["class_noun"], w["instance_prompt"], w["class_prompt"]]
    run_inputs = {k: w[k] for k in (*RUN_INPUTS, *FIELDS)}

    # Progress: one cheap timer for status, plot, validation images and the run's state.
    gr.Timer(POLL_SECONDS).tick(
        handlers.poll, [ui.last, w["subject"], w["run_name"]],
        [ui.status, ui.plot, ui.validation, w["run_info"], ui.fidelity_plot, ui.fidelity,
         ui.keep_btn, ui.last], **quiet)

    for button, fn, api in ((ui.start_btn, handlers.start, "start_training"),
                            (ui.resume_btn, handlers.resume, "resume_training")):
        button.click(fn, inputs_kwargs=run_inputs, outputs=ui.message, api_name=api).then(
            handlers.after_start, [w["subject"], w["run_name"]],
            [w["run_name"], w["run_info"]], **quiet)
    ui.cancel_btn.click(handlers.cancel, None, ui.message, api_name="cancel_training")
    ui.keep_btn.click(handlers.keep_best, None, ui.message, api_name="keep_best_checkpoint")
    gr.api(handlers.status, api_name="training_status")

    # Runs: the subject's list; picking one shows its state and reloads its settings.
    # The page is built once: the list is also refreshed when it is opened.
    for event in (w["subject"].change, w["run_name"].focus):
        event(handlers.runs, w["subject"], w["run_name"], **quiet)
    w["run_name"].change(handlers.run_info, [w["subject"], w["run_name"]], w["run_info"],
                         api_name="run_info", queue=False, show_progress="hidden")
    # .input: a run chosen from the list or its name typed in (not programmatic changes).
    w["run_name"].input(
        handlers.load_run, [w["subject"], w["run_name"], w["identifier"]], fillable, **quiet
    ).then(handlers.identifier_report, report_inputs, w["identifier_check"], **quiet)

    w["preset"].input(
        handlers.apply_preset, [w["preset"], w["identifier"]], [w["preset_info"], *fillable],
        api_name="apply_preset", queue=False, show_progress="hidden",
    ).then(handlers.identifier_report, report_inputs, w["identifier_check"], **quiet)

    # Identifier: typing recomposes the prompts and re-checks it with the model's tokenizer.
    # always_last: keystrokes typed while a check is under way must not be dropped.
    typing = {"show_progress": "hidden", "trigger_mode": "always_last"}
    w["class_noun"].input(handlers.compose, [w["identifier"], w["class_noun"]], prompts,
                          api_name="check_identifier", **typing)
    instance_and_check = [w["instance_prompt"], w["identifier_check"]]
    w["identifier"].input(handlers.retype_identifier,
                          [w["identifier"], w["class_noun"], w["class_prompt"]],
                          instance_and_check, api_visibility="private", **typing)
    w["suggest"].click(
        handlers.suggest, [w["class_noun"], w["class_prompt"], ui.presses],
        [w["suggestions"], w["identifier"], *instance_and_check, ui.presses],
        api_name="suggest_identifiers")
    w["suggestions"].input(
        handlers.pick_suggestion, [w["suggestions"], w["class_noun"], w["class_prompt"]],
        [w["identifier"], *instance_and_check], **quiet)

    # Class images: shown for the class prompt in use; your own can be added.
    # They are counted as a run with the form's precision would use them; it comes last so
    # that API callers may leave it out (the form's default).
    class_inputs = [w["class_prompt"], w["resolution"], w["num_class_images"]]
    precision = w["mixed_precision"]
    class_outputs = [w["class_summary"], w["class_gallery"]]
    # The API-visible event first: later ones with the same function get suffixed names.
    w["class_refresh"].click(handlers.class_images, [*class_inputs, precision], class_outputs,
                             api_name="class_images", queue=False)
    for event in (w["class_prompt"].change, w["num_class_images"].change,
                  w["resolution"].change, precision.change):
        event(handlers.class_images, [*class_inputs, precision], class_outputs, **quiet)
    w["class_upload"].upload(
        handlers.add_class_images, [*class_inputs, w["class_upload"], precision],
        [*class_outputs, w["class_upload"]], api_name="add_class_images")
