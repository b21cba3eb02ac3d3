"""Evaluate tab: score a trained LoRA with the DreamBooth paper's fidelity metrics.

DINO and CLIP-I compare generated images with the subject's prepared photos (does it look
like the subject?), CLIP-T compares them with the prompt (does it follow the prompt?).
The images come from the Studio's cached generator, so the base model loads once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from ..config import default_of
from ..errors import InputError
from ..studio import (
    CSV_NAME,
    JSON_NAME,
    PAPER_REFERENCE,
    EvalConfig,
    EvalProgress,
    EvalReport,
    Studio,
    compared_with_sentence,
)
from . import loras
from .common import duration, guarded

RUN_KIND = "evaluate"
AUTO_KIND = "auto"
PROMPT_COLUMNS = ["Prompt", "DINO", "CLIP-I", "CLIP-T"]
SUMMARY_COLUMNS = ["Row", "DINO", "CLIP-I", "CLIP-T"]
PAPER_PROMPTS = 25  # prompts per kind of subject in the DreamBooth paper


@dataclass
class EvaluateWidgets:
    lora: gr.Dropdown
    refresh: gr.Button
    about: gr.Markdown
    settings: dict[str, gr.components.Component]  # the evaluation's settings, by name
    run_btn: gr.Button
    stop_btn: gr.Button
    status: gr.Markdown
    summary: gr.Dataframe
    prompts: gr.Dataframe
    samples: gr.Gallery
    files: gr.File


@dataclass
class EvaluateTab:
    lora: gr.Dropdown
    refresh_loras: Callable  # current label -> dropdown update with fresh choices


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def prompt_table(report: EvalReport | None) -> pd.DataFrame:
    rows = [] if report is None else [
        [r.prompt, _round(r.dino), _round(r.clip_i), _round(r.clip_t)] for r in report.rows]
    return pd.DataFrame(rows, columns=PROMPT_COLUMNS)


def summary_table(report: EvalReport | None) -> pd.DataFrame:
    """This LoRA's means, the user's photos against each other, then the paper's rows."""
    rows = []
    if report is not None and report.rows:
        means = report.means
        rows.append([f"This LoRA: mean of {len(report.rows)} prompts", _round(means["dino"]),
                     _round(means["clip_i"]), _round(means["clip_t"])])
        if report.real_photos.get("dino") is not None:
            rows.append(["Your photos, each vs the others", _round(report.real_photos["dino"]),
                         _round(report.real_photos["clip_i"]), None])
    rows += [[ref.name, ref.dino, ref.clip_i, ref.clip_t] for ref in PAPER_REFERENCE]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def scorer_choices(studio: Studio, name: str) -> list[str]:
    """The models the page offers for EvalConfig field `name` ("dino_model", "clip_model"):
    the one the server was started with (app.py --dino-model), then the default."""
    default = default_of(EvalConfig, name)
    return list(dict.fromkeys(m for m in (studio.scorer_models.get(name), default) if m))


def offered_scorer(studio: Studio, name: str, value: str | None) -> str:
    """`value` if the page offers it. A caller of the API can send anything, and a scorer
    model is a folder or Hub id the server would read or download: so only the page's."""
    choices = scorer_choices(studio, name)
    if value not in choices:
        what, flag = name.split("_")[0].upper(), "--" + name.replace("_", "-")
        raise InputError(f"{what} model '{value}' is not one this app offers "
                         f"({', '.join(choices)}): pick one from the list. Other models are "
                         f"added by whoever starts the app (app.py {flag} ID_OR_FOLDER).")
    return value


def describe(studio: Studio, label: str | None) -> str:
    entry = studio.find_lora(label) if label else None
    if entry is None:
        return ("Pick a LoRA you trained on the Train tab." if not label
                else "This LoRA no longer exists: press ↻.")
    return (loras.describe(studio, entry) + f"\n\nIts images are compared with the prepared "
            f"photos of **{entry.subject}**.")


class EvaluateHandlers:
    def __init__(self, studio: Studio, ui: EvaluateWidgets):
        self.studio = studio
        self.ui = ui

    def refresh(self, current: str | None):
        choices = loras.lora_labels(self.studio)
        value = current if current in choices else loras.newest_label(self.studio, None)
        return {self.ui.lora: gr.update(choices=choices, value=value)}

    def describe(self, label: str | None):
        return {self.ui.about: describe(self.studio, label)}

    @guarded("status")
    def evaluate(self, progress=gr.Progress(), **v):  # noqa: B008 - Gradio idiom
        """Generate the paper's prompts with a LoRA and score them; returns (summary text,
        per-prompt table, means next to the paper's rows, sample images, result files)."""
        kind = v["kind"] if v["kind"] in ("object", "live") else None
        config = self.studio.evaluation_config(
            v["lora"] or "", kind=kind, images_per_prompt=int(v["images_per_prompt"]),
            num_prompts=int(v["num_prompts"]), steps=int(v["steps"]),
            dino_model=offered_scorer(self.studio, "dino_model", v["dino_model"]),
            clip_model=offered_scorer(self.studio, "clip_model", v["clip_model"]),
        )
        progress(0, desc="Loading the scoring models (first time only)")

        def show(p: EvalProgress) -> None:
            if p.total and p.phase == "generating":
                progress((p.done, p.total), desc=p.message, unit="steps")
            else:
                progress(0, desc=p.message)

        with self.studio.cancellable(RUN_KIND) as cancel:
            report, output = self.studio.evaluate(config, progress=show, cancel=cancel)
        ui = self.ui
        update = {ui.prompts: prompt_table(report), ui.summary: summary_table(report),
                  ui.samples: [(str(output / r.images[0]), r.prompt)
                               for r in report.rows if r.images]}
        what = (f"**{v['lora']}**: {len(report.rows)} prompts × {config.images_per_prompt} "
                f"images, '{config.kind}' prompts for *{config.identifier} "
                f"{config.class_noun}*, {config.steps} steps, {duration(report.seconds)}")
        if report.status != "completed":
            return {**update, ui.files: None,
                    ui.status: f"### ⏹️ Stopped\n{what}. The finished prompts are below; no "
                               "result files were written."}
        return {**update, ui.files: [str(output / JSON_NAME), str(output / CSV_NAME)],
                ui.status: f"### ✅ Done\n{what}.\n\nHigher is better for all three. "
                           f"{compared_with_sentence(report)} Saved in `{output}`: "
                           f"`{JSON_NAME}`, `{CSV_NAME}` and the images."}

    def stop(self):
        if self.studio.stop(RUN_KIND):
            return {self.ui.status: "Stopping after the current step; the finished prompts "
                                    "will be shown."}
        return {self.ui.status: "No evaluation is running, so there is nothing to stop."}


def _scorer_dropdown(studio: Studio, name: str, label: str, info: str) -> gr.Dropdown:
    choices = scorer_choices(studio, name)
    flag = "--" + name.replace("_", "-")
    return gr.Dropdown(choices, value=choices[0], label=label, allow_custom_value=False,
                       info=f"{info} Others are added when the app is started "
                            f"(app.py {flag} ID_OR_FOLDER).")


def _settings(studio: Studio) -> dict[str, gr.components.Component]:
    w: dict[str, gr.components.Component] = {}
    w["kind"] = gr.Radio(
        [("Automatic", AUTO_KIND), ("Object", "object"), ("Live (pet or person)", "live")],
        value=AUTO_KIND, label="Kind of subject",
        info="Picks the paper's 25 prompts for objects or for living subjects (these add "
             "actions such as 'sleeping'). Automatic: live for dogs, cats and people.",
    )
    with gr.Row():
        w["num_prompts"] = gr.Slider(
            1, PAPER_PROMPTS, value=default_of(EvalConfig, "num_prompts") or PAPER_PROMPTS,
            step=1, label="Number of prompts",
            info="The paper uses all 25; fewer gives a quick, rougher score.",
        )
        w["images_per_prompt"] = gr.Slider(
            1, 16, value=default_of(EvalConfig, "images_per_prompt"), step=1,
            label="Images per prompt",
            info="The paper uses 4; more images make the averages steadier.",
        )
    w["steps"] = gr.Slider(
        1, 100, value=default_of(EvalConfig, "steps"), step=1, label="Steps",
        info="Denoising steps of each image; lower is quicker but rougher.",
    )
    with gr.Accordion("Scoring models", open=False):
        w["dino_model"] = _scorer_dropdown(
            studio, "dino_model", "DINO model",
            "The DINO ViT that measures subject likeness (DINO score). Downloaded once, "
            "then cached.")
        w["clip_model"] = _scorer_dropdown(
            studio, "clip_model", "CLIP model",
            "The CLIP model behind the CLIP-I (likeness) and CLIP-T (follows the prompt) "
            "scores.")
    return w


def _widgets(studio: Studio) -> EvaluateWidgets:
    gr.Markdown(
        "Measure how well a LoRA learned your subject, as the DreamBooth paper does: "
        "**DINO** and **CLIP-I** say how much the pictures look like your photos, "
        "**CLIP-T** how well they follow the prompt. All three go from about 0 to 1; the "
        "paper's numbers are shown next to yours."
    )
    w: dict = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            with gr.Row(equal_height=True):
                current = loras.newest_label(studio, None)
                w["lora"] = gr.Dropdown(
                    loras.lora_labels(studio), value=current, label="LoRA to score",
                    scale=5, allow_custom_value=True,  # runs finish while the page is open
                    info="A LoRA you trained on the Train tab.",
                )
                w["refresh"] = gr.Button("↻", scale=0, min_width=48, size="lg")
            w["about"] = gr.Markdown(describe(studio, current))
            w["settings"] = _settings(studio)
            with gr.Row():
                w["run_btn"] = gr.Button("Run evaluation", variant="primary", scale=2)
                w["stop_btn"] = gr.Button("Stop", variant="stop", scale=1)
        with gr.Column(scale=1, min_width=340):
            w["status"] = gr.Markdown("Results appear here. 25 prompts × 4 images take a few "
                                      "minutes on a GPU, much longer on a CPU.")
            widths = ["58%", "14%", "14%", "14%"]
            w["summary"] = gr.Dataframe(summary_table(None),
                                        label="Means and the paper's results",
                                        interactive=False, wrap=True, column_widths=widths)
            w["prompts"] = gr.Dataframe(prompt_table(None), label="Scores per prompt",
                                        interactive=False, wrap=True, max_height=400,
                                        column_widths=widths)
            w["samples"] = gr.Gallery(label="First image of each prompt", columns=5,
                                      height=220, object_fit="contain")
            w["files"] = gr.File(label="Result files (fidelity.json, fidelity.csv)",
                                 file_count="multiple", interactive=False)
    return EvaluateWidgets(**w)


def build_evaluate_tab(studio: Studio) -> EvaluateTab:
    ui = _widgets(studio)
    handlers = EvaluateHandlers(studio, ui)
    ui.refresh.click(handlers.refresh, ui.lora, ui.lora, api_visibility="private", queue=False)
    ui.lora.change(handlers.describe, ui.lora, ui.about, api_visibility="private", queue=False)
    ui.run_btn.click(handlers.evaluate, inputs_kwargs={"lora": ui.lora, **ui.settings},
                     outputs=[ui.status, ui.prompts, ui.summary, ui.samples, ui.files],
                     api_name="evaluate", concurrency_id="generator", concurrency_limit=1,
                     show_progress_on=ui.status)
    ui.stop_btn.click(handlers.stop, None, ui.status, api_name="stop_evaluation", queue=False)
    return EvaluateTab(lora=ui.lora, refresh_loras=handlers.refresh)
