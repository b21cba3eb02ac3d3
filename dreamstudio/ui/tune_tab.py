"""Tune tab: the scored sweep over a run's LoRAs, scales and guidance, in the app.

Estimate says how many images and about how long; Run sweep streams its progress and ends
in the plot, the table and the recommendation; one click puts the recommended LoRA and
sliders into the Generate tab. A run's saved sweep is shown when the run is picked.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from ..errors import InputError
from ..studio import Studio, SweepResult, draw_scatter, table_rows
from . import tune_text as text
from .common import guarded
from .evaluate_tab import offered_scorer
from .generate_tab import lora_choices
from .loras import BASE_MODEL
from .streaming import UpdateStream
from .tune_widgets import VALUE_AXES, TuneWidgets, build_widgets

RUN_KIND = "tune"  # the Studio's stop flag of a sweep
NO_RESULT = "The recommendation appears here after a sweep."


@dataclass
class GenerateTargets:
    """The Generate tab's controls that "Use this in Generate" fills, and the tabs."""

    lora: gr.Dropdown
    known: gr.State  # the labels the Generate tab has seen (it selects new ones itself)
    unet_scale: gr.Slider
    text_encoder_scale: gr.Slider
    guidance: gr.Slider
    tabs: gr.Tabs

    @property
    def outputs(self) -> list:
        return [self.lora, self.known, self.unet_scale, self.text_encoder_scale,
                self.guidance, self.tabs]


@dataclass
class TuneTab:
    subject: gr.Dropdown
    run: gr.Dropdown
    refresh: object  # (subject, run) -> {subject, run, candidates, result widgets...}
    outputs: list  # what refresh fills


def run_names(studio: Studio, subject: str | None) -> list[str]:
    """The subject's runs that have something to try: a final LoRA or a checkpoint."""
    if not subject:
        return []
    return [r.name for r in studio.runs(subject) if r.has_lora or r.checkpoint_step is not None]


def tunable_subjects(studio: Studio) -> list[str]:
    return [s for s in studio.subjects() if run_names(studio, s)]


def table(result: SweepResult) -> pd.DataFrame:
    headers, rows = text.page_table(*table_rows(result))
    return pd.DataFrame(rows, columns=headers)


class TuneHandlers:
    def __init__(self, studio: Studio, ui: TuneWidgets, targets: GenerateTargets | None):
        self.studio = studio
        self.ui = ui
        self.targets = targets

    # ---- Picking the run ----------------------------------------------------------------
    def refresh(self, subject: str | None, run: str | None):
        """Fresh subject and run lists (the current ones kept while they exist), the run's
        LoRAs and its saved sweep."""
        subjects = tunable_subjects(self.studio)
        if subject not in subjects:
            newest = self.studio.newest_lora()
            subject = (newest.subject if newest and newest.subject in subjects
                       else (subjects[0] if subjects else None))
        update = {self.ui.subject: gr.update(choices=subjects, value=subject)}
        return {**update, **self.pick_subject(subject, run)}

    def pick_subject(self, subject: str | None, run: str | None):
        runs = run_names(self.studio, subject)
        if run not in runs:
            run = runs[-1] if runs else None
        return {self.ui.run: gr.update(choices=runs, value=run), **self.show_run(subject, run)}

    @guarded("status")
    def show_run(self, subject: str | None, run: str | None):
        """The run's LoRAs as checkboxes; its saved sweep (with the values it tried), if any."""
        ui = self.ui
        if not subject or not run:
            return {ui.candidates: gr.update(choices=[], value=[]), **self.result_view(None),
                    ui.status: "No trained run yet: train one on the Train tab first."}
        candidates = self.studio.tune_candidates(subject, run)
        choices = text.candidate_choices(candidates)
        chosen = text.default_candidates(candidates)
        update = {ui.status: text.IDLE}
        result = self.studio.last_tune(subject, run)
        if result is not None:
            saved = result.config
            names = {name for _, name in choices}
            picked = [n for n in saved.get("candidates") or [] if n in names]
            chosen = picked or chosen
            for name in VALUE_AXES:
                if saved.get(name):
                    update[ui.settings[name]] = text.values_text(saved[name])
            if saved.get("clip_t_tolerance") is not None:
                update[ui.settings["clip_t_tolerance"]] = text.tolerance_percent(
                    saved["clip_t_tolerance"])
            update[ui.status] = (f"Showing the sweep saved for **{subject} / {run}**; its "
                                 "values are in the boxes. Run it again or widen it: the "
                                 "images already drawn are reused.")
        update[ui.candidates] = gr.update(choices=choices, value=chosen)
        return {**update, **self.result_view(result)}

    def result_view(self, result: SweepResult | None, tolerance: float | None = None) -> dict:
        """The result's plot, table, recommendation and files; judged at `tolerance` (a
        fraction) when given, the plot then drawn again for that pick."""
        ui = self.ui
        if result is None:
            return {ui.plot: None, ui.table: pd.DataFrame(), ui.summary: NO_RESULT,
                    ui.files: None}
        judged = result if tolerance is None else text.rejudged(result, tolerance)
        plot = result.files.get("png") if judged is result else draw_scatter(judged)
        summary = text.recommendation_text(judged)
        if note := text.rejudged_note(judged, result):
            summary += "\n\n" + note
        return {ui.plot: plot, ui.table: table(judged), ui.summary: summary,
                ui.files: text.files_list(result) or None}

    @guarded("summary")
    def rejudge(self, subject: str | None, run: str | None, tolerance_percent: float):
        """The saved sweep judged at the slider's CLIP-T tolerance: nothing is drawn."""
        result = self.studio.last_tune(subject, run) if subject and run else None
        if result is None:
            return {}
        return self.result_view(result, text.tolerance_fraction(tolerance_percent))

    # ---- Estimate and sweep ---------------------------------------------------------------
    def _config(self, v: dict):
        subject, run = (v.get("subject") or "").strip(), (v.get("run") or "").strip()
        if not subject or not run:
            raise InputError("Pick a subject and one of its runs first.")
        values = {name: text.sweep_values(axis, v[name]) for name, axis in VALUE_AXES.items()}
        return self.studio.tune_config(
            subject, run, candidates=list(v.get("candidates") or []), **values,
            prompt_set=v["prompt_set"], images_per_prompt=int(v["images_per_prompt"]),
            steps=int(v["steps"]), leak_images=int(v["leak_images"]),
            clip_t_tolerance=text.tolerance_fraction(v["clip_t_tolerance"]),
            face_identity=v["face_identity"],
            dino_model=offered_scorer(self.studio, "dino_model", v["dino_model"]),
            clip_model=offered_scorer(self.studio, "clip_model", v["clip_model"]),
        )

    @guarded("status")
    def estimate(self, **v):
        """How many images the sweep draws (and reuses) and about how long it takes here."""
        plan = self.studio.tune_plan(self._config(v))
        return {self.ui.status: f"**Estimate:** {plan.describe()}"}

    @guarded("status")
    def sweep(self, **v):
        """Run the sweep, streaming 'image 12/48 · drawing · cell' and the last image; ends
        with (status, last image, plot, table, recommendation, files)."""
        config = self._config(v)
        ui, stream = self.ui, UpdateStream()
        yield {ui.status: "Loading the model and the scorers (first time only)…",
               ui.use_note: ""}

        last: dict = {}  # the last image drawn, kept for the final answer too

        def show(p) -> None:
            update = {ui.status: text.progress_text(p)}
            if p.image is not None:
                update[ui.last_image] = last[ui.last_image] = p.image
            stream.put(update)

        with self.studio.cancellable(RUN_KIND) as cancel:
            result = yield from stream.run(
                lambda: self.studio.tune(config, progress=show, cancel=cancel), cancel)
        done = result.status == "completed"
        status = (f"✅ Sweep done: {len(result.cells)} cell(s) and {len(result.base)} "
                  f"base-model row(s)." if done else
                  f"⏹️ Stopped after {len(result.cells)} cell(s).")
        yield {**self.result_view(result), **last, ui.status: status}

    def stop(self):
        if self.studio.stop(RUN_KIND):
            return {self.ui.status: "Stopping after the current step; the images drawn so "
                                    "far are kept and reused next time."}
        return {self.ui.status: "No sweep is running, so there is nothing to stop."}

    # ---- Use the recommendation ---------------------------------------------------------
    @guarded("use_note")
    def use(self, subject: str | None, run: str | None, tolerance_percent: float | None = None):
        """The recommended LoRA and sliders (at the slider's CLIP-T tolerance, in percent;
        default the sweep's) into the Generate tab, which is then opened."""
        if not subject or not run:
            raise InputError("Pick a subject and one of its runs first.")
        result = self.studio.last_tune(subject, run)
        if result is None:
            raise InputError(f"{subject} / {run} has no sweep yet: press Run sweep first.")
        if tolerance_percent is not None:
            result = text.rejudged(result, text.tolerance_fraction(tolerance_percent))
        rec = result.recommendation
        if rec is None or rec.cell is None:
            why = rec.reason if rec else "the sweep was stopped before it finished"
            raise InputError(f"The sweep recommends no cell ({why}); widen it or change the "
                             "tolerance, then run it again.")
        label, sliders = self.studio.use_tuned(subject, run, rec.cell)
        label = label or BASE_MODEL  # the base model's row has no LoRA
        note = (f"**{label}** with UNet {sliders['unet_scale']:g}, text encoder "
                f"{sliders['text_encoder_scale']:g} and guidance {sliders['guidance']:g} "
                "are set on the Generate tab.")
        t = self.targets
        if t is None:  # a tab built on its own (tests): only the note
            return {self.ui.use_note: note}
        choices = lora_choices(self.studio)
        return {t.lora: gr.update(choices=choices, value=label), t.known: choices,
                t.unet_scale: sliders["unet_scale"],
                t.text_encoder_scale: sliders["text_encoder_scale"],
                t.guidance: sliders["guidance"], t.tabs: gr.Tabs(selected="generate"),
                self.ui.use_note: note}


def build_tune_tab(studio: Studio, targets: GenerateTargets | None = None) -> TuneTab:
    subjects = tunable_subjects(studio)
    newest = studio.newest_lora()
    subject = (newest.subject if newest and newest.subject in subjects
               else (subjects[0] if subjects else None))
    runs = run_names(studio, subject)
    run = newest.name if newest and newest.name in runs and newest.subject == subject else (
        runs[-1] if runs else None)
    # The page's first state lists the run's LoRAs; the saved sweep is shown on tab select.
    try:
        candidates = studio.tune_candidates(subject, run) if run else []
    except InputError:
        candidates = []
    ui = build_widgets(studio, subjects, subject, runs, run,
                       text.candidate_choices(candidates), text.default_candidates(candidates))
    handlers = TuneHandlers(studio, ui, targets)
    outputs = _wire(handlers, ui, targets)
    return TuneTab(subject=ui.subject, run=ui.run, refresh=handlers.refresh, outputs=outputs)


def _wire(handlers: TuneHandlers, ui: TuneWidgets, targets: GenerateTargets | None) -> list:
    quiet = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}
    tolerance = ui.settings["clip_t_tolerance"]
    shown = [ui.candidates, *(ui.settings[n] for n in VALUE_AXES), tolerance,
             *ui.result_outputs, ui.status]
    refreshed = [ui.subject, ui.run, *shown]
    ui.refresh.click(handlers.refresh, [ui.subject, ui.run], refreshed, **quiet)
    ui.subject.input(handlers.pick_subject, [ui.subject, ui.run], [ui.run, *shown], **quiet)
    ui.run.input(handlers.show_run, [ui.subject, ui.run], shown, api_name="tune_show",
                 queue=False, show_progress="hidden")
    inputs = {"subject": ui.subject, "run": ui.run, "candidates": ui.candidates,
              **ui.settings}
    # Both load the model: they wait in the generator's queue like Generate and Evaluate.
    run = {"concurrency_id": "generator", "concurrency_limit": 1}
    ui.estimate_btn.click(handlers.estimate, inputs_kwargs=inputs, outputs=ui.status,
                          api_name="tune_estimate", show_progress_on=ui.status, **run)
    ui.run_btn.click(handlers.sweep, inputs_kwargs=inputs,
                     outputs=[ui.status, ui.last_image, *ui.result_outputs, ui.use_note],
                     api_name="tune_sweep", show_progress="minimal",
                     show_progress_on=ui.status, **run)
    # Not queued: it must run while a sweep holds the queue.
    ui.stop_btn.click(handlers.stop, None, ui.status, api_name="stop_tune", queue=False)
    use_outputs = [*(targets.outputs if targets else []), ui.use_note]
    ui.use_btn.click(handlers.use, [ui.subject, ui.run, tolerance], use_outputs,
                     api_name="tune_use", queue=False)
    # The rule is applied again to the saved scores as the tolerance moves (no drawing).
    tolerance.input(handlers.rejudge, [ui.subject, ui.run, tolerance], ui.result_outputs,
                    api_name="tune_rejudge", show_progress="hidden", trigger_mode="always_last")
    return refreshed
