"""What the Train tab does: start, resume and cancel runs, poll their progress, fill the
form from a preset or a run, check identifiers and show the shared class images.

Each handler returns updates keyed by the widgets it changes (TrainWidgets)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from ..errors import DreamStudioError, InputError
from ..studio import JobStatus, RunInfo, Studio, best_point, compose_prompts
from .common import guarded, prepared_subjects
from .train_form import FILLABLE, form_values, preset_markdown, train_settings
from .train_status import (
    fidelity_frame,
    fidelity_markdown,
    loss_frame,
    status_dict,
    status_markdown,
    validation_items,
)
from .train_text import class_images_markdown, identifier_markdown, run_markdown

if TYPE_CHECKING:
    from ..config import TrainConfig
    from .train_widgets import TrainWidgets

SUGGESTIONS = 5
MAX_CLASS_THUMBNAILS = 48


def current_status(studio: Studio) -> tuple[JobStatus, dict]:
    """The training job's status, and the same as plain data (status_dict)."""
    status = studio.training_status()
    address = studio.run_address(status.config.output_dir) if status.config else None
    return status, status_dict(status, address)


def _fill(form: dict, values: dict) -> dict:
    return {form[k]: values[k] for k in FILLABLE if k in values}


class TrainHandlers:
    def __init__(self, studio: Studio, ui: TrainWidgets):
        self.studio = studio
        self.ui = ui
        self.form = ui.form

    # ---- runs -------------------------------------------------------------------------
    def _config(self, values: dict, resume: bool) -> TrainConfig:
        use_prior = bool(values["prior_preservation"])
        class_prompt = (values["class_prompt"] or "").strip() if use_prior else None
        if use_prior and not class_prompt:
            raise InputError("Prior preservation needs a class prompt, e.g. 'a photo of dog' "
                             "(the instance prompt without the identifier).")
        return self.studio.training_config(
            (values["subject"] or "").strip(), (values["instance_prompt"] or "").strip(),
            run_name=(values["run_name"] or "").strip() or None, class_prompt=class_prompt,
            resume=resume, **train_settings(values),
        )

    def _address(self, cfg: TrainConfig) -> tuple[str, str]:
        return self.studio.run_address(cfg.output_dir) or ("?", cfg.output_dir.name)

    @guarded("message")
    def start(self, **values):
        """Start a new training run in the background; returns what happened, for the user."""
        cfg = self._config(values, resume=False)
        self.studio.start_training(cfg)
        subject, run = self._address(cfg)
        return {self.ui.message: f"Training started: **{subject} / {run}**, {cfg.steps} steps; "
                                 "progress appears below."}

    @guarded("message")
    def resume(self, **values):
        """Continue the chosen run from its latest checkpoint, with the same settings."""
        cfg = self._config(values, resume=True)
        self.studio.start_training(cfg)
        subject, run = self._address(cfg)
        step = self.studio.run_info(subject, run).checkpoint_step
        return {self.ui.message: f"Resuming **{subject} / {run}** from step {step} to "
                                 f"{cfg.steps}; progress appears below."}

    @guarded("message")
    def cancel(self):
        if self.studio.cancel_training():
            return {self.ui.message: "Cancelling: the run stops after the current step, saves "
                                     "a checkpoint if checkpoints are on, and writes no LoRA."}
        return {self.ui.message: "No training is running, so there is nothing to cancel."}

    @guarded("message")
    def keep_best(self):
        """Write the best scored checkpoint of the latest run as a LoRA of its own."""
        status = self.studio.training_status()
        best = best_point(status.progress.fidelity if status.progress else [])
        if best is None or status.config is None:
            raise InputError("No run has scored checkpoints yet: turn on Score checkpoints "
                             "(Advanced) and train.")
        address = self.studio.run_address(status.config.output_dir)
        if address is None:
            raise InputError(f"The run in {status.config.output_dir} is not in this "
                             "workspace, so its checkpoint cannot be listed as a LoRA here.")
        entry = self.studio.keep_checkpoint(*address, best["step"])
        return {self.ui.message: f"Kept step {best['step']} of **{address[0]} / "
                                 f"{address[1]}** as the LoRA **{entry.label}**: pick it on "
                                 "the Generate or Evaluate tab."}

    def _status_dict(self) -> tuple[JobStatus, dict]:
        return current_status(self.studio)

    def status(self) -> dict:
        """The current training status as JSON (state, phase, step, loss, times, files)."""
        return self._status_dict()[1]

    def _run(self, subject: str | None, name: str | None) -> RunInfo | None:
        try:
            return self.studio.run_info((subject or "").strip(), (name or "").strip())
        except DreamStudioError:
            return None

    def run_text(self, subject: str | None, name: str | None) -> str:
        name = (name or "").strip()
        run = self._run(subject, name) if name else None
        return run_markdown(name, run, self.studio.training_status())

    def run_info(self, subject: str | None, name: str | None):
        """What the chosen run holds: a new name, a finished LoRA, a checkpoint (step N)."""
        return {self.form["run_info"]: self.run_text(subject, name)}

    def _run_names(self, subject: str | None) -> list[str]:
        try:
            return [r.name for r in self.studio.runs((subject or "").strip())]
        except DreamStudioError:
            return []

    def runs(self, subject: str | None):
        """The run list of the subject. The value is left alone: this also runs when the
        list gets the focus, and the user may be typing a new name by the time it returns."""
        return {self.form["run_name"]: gr.update(choices=self._run_names(subject))}

    def after_start(self, subject: str | None, current: str | None):
        """After Start: show the run that now trains (its name may have been made up)."""
        status = self.studio.training_status()
        if status.running and status.config:
            address = self.studio.run_address(status.config.output_dir)
            if address and address[0] == (subject or "").strip():
                current = address[1]
        return {self.form["run_name"]: gr.update(choices=self._run_names(subject),
                                                 value=current or ""),
                self.form["run_info"]: self.run_text(subject, current)}

    def load_run(self, subject: str | None, name: str | None, identifier: str | None):
        """Picking an earlier run fills the form with its settings, so Resume matches."""
        run = self._run(subject, name)
        values = form_values(run.settings, identifier) if run and run.settings else {}
        return _fill(self.form, values) or gr.skip()

    def apply_preset(self, name: str | None, identifier: str | None):
        presets = self.studio.presets
        preset = presets.get(name or "")
        values = form_values(preset.settings, identifier) if preset else {}
        return {self.form["preset_info"]: preset_markdown(presets, name),
                **_fill(self.form, values)}

    def poll(self, last: list | None, subject: str | None, name: str | None):
        """Timer tick: refresh what changed of the status, loss plot, validation images and
        (when a run starts or ends) the chosen run's description."""
        ui = self.ui
        status, s = self._status_dict()
        text = status_markdown(s)
        run = str(status.config.output_dir) if status.config else None
        forming = status.progress.preview if status.progress else None
        key = [text, run, len(status.losses), len(s["validation_images"]), status.state,
               id(forming) if forming is not None else None, len(s["fidelity"]),
               s["fidelity_note"]]
        if last is not None and list(last) == key:
            return gr.skip()
        # A page open from before an app update may hold a shorter key: all is sent then.
        old = list(last) if last is not None and len(last) == len(key) else [None] * len(key)
        update = {ui.status: text, ui.last: key}
        if old[1:3] != key[1:3]:
            update[ui.plot] = loss_frame(status.loss_steps, status.losses)
        if forming is not None and old[5] != key[5]:
            # While class images are drawn, the gallery shows the one forming.
            update[ui.validation] = [(forming, "class image forming")]
        elif (old[1], old[3], old[5]) != (key[1], key[3], key[5]):
            update[ui.validation] = validation_items(s["validation_images"])
        if (old[1], old[6], old[7]) != (key[1], key[6], key[7]):
            update[ui.fidelity_plot] = fidelity_frame(s["fidelity"])
            update[ui.fidelity] = fidelity_markdown(s["fidelity"], s["fidelity_note"])
            update[ui.keep_btn] = gr.update(interactive=bool(s["fidelity"]))
        if (old[1], old[4]) != (key[1], key[4]):
            update[self.form["run_info"]] = self.run_text(subject, name)
        return update

    def subjects(self, current: str | None):
        choices = prepared_subjects(self.studio)
        value = current if current in choices else (choices[0] if choices else None)
        return {self.form["subject"]: gr.update(choices=choices, value=value)}

    # ---- identifier -------------------------------------------------------------------
    def _identifier_text(self, identifier: str | None, class_noun: str | None,
                         instance_prompt: str | None = None,
                         class_prompt: str | None = None) -> str:
        try:
            check = self.studio.check_identifier(identifier or "", class_noun or "")
        except DreamStudioError as exc:  # e.g. no tokenizer offline: prompts still work
            return f"⚠️ {exc}"
        return identifier_markdown(check, instance_prompt, class_prompt)

    def identifier_report(self, identifier: str | None, class_noun: str | None,
                          instance_prompt: str | None = None, class_prompt: str | None = None):
        return {self.form["identifier_check"]: self._identifier_text(
            identifier, class_noun, instance_prompt, class_prompt)}

    def compose(self, identifier: str | None, class_noun: str | None):
        """Instance and class prompt from identifier + class noun, and the identifier's
        check: its token count, how common it is."""
        instance, klass = compose_prompts(identifier or "", class_noun or "")
        update = {self.form["instance_prompt"]: instance,
                  self.form["identifier_check"]: self._identifier_text(identifier, class_noun)}
        if klass:
            update[self.form["class_prompt"]] = klass
        return update

    def retype_identifier(self, identifier: str | None, class_noun: str | None,
                          class_prompt: str | None):
        """A new identifier changes the instance prompt only (the class prompt may be a
        preset's own wording)."""
        instance = compose_prompts(identifier or "", class_noun or "")[0]
        return {self.form["instance_prompt"]: instance,
                self.form["identifier_check"]: self._identifier_text(
                    identifier, class_noun, instance, class_prompt)}

    @guarded(lambda ui: ui.form["identifier_check"])
    def suggest(self, class_noun: str | None, class_prompt: str | None, presses: int | None):
        """Rare single-token identifiers from the model's vocabulary (new ones each press)."""
        presses = int(presses or 0)
        words = self.studio.suggest_identifiers(SUGGESTIONS, seed=presses)
        if not words:
            raise InputError("This model's vocabulary has no short rare tokens to suggest; "
                             "type an identifier yourself.")
        return {self.form["suggestions"]: gr.update(choices=words, value=words[0], visible=True),
                self.form["identifier"]: words[0], self.ui.presses: presses + 1,
                **self.retype_identifier(words[0], class_noun, class_prompt)}

    def pick_suggestion(self, word: str | None, class_noun: str | None,
                        class_prompt: str | None):
        return {self.form["identifier"]: word or "",
                **self.retype_identifier(word, class_noun, class_prompt)}

    # ---- class images -----------------------------------------------------------------
    def _class_view(self, class_prompt: str | None, resolution: float, wanted: float | None,
                    mixed_precision: str | None) -> tuple[str, list]:
        class_prompt = (class_prompt or "").strip()
        if not class_prompt:
            return "Type a class prompt to see its class images.", []
        # Judged by the form's precision: a run uses only class images drawn at its own.
        settings = {"mixed_precision": mixed_precision} if mixed_precision else {}
        images = self.studio.class_images(class_prompt, int(resolution), int(wanted or 0),
                                          **settings)
        ordered = sorted(images.images, key=lambda i: i.generated)  # yours first
        items = [(str(i.path), i.source) for i in ordered[:MAX_CLASS_THUMBNAILS]]
        text = class_images_markdown(images, class_prompt, int(resolution))
        if len(ordered) > MAX_CLASS_THUMBNAILS:
            text += f" (showing {MAX_CLASS_THUMBNAILS})"
        return text, items

    def class_images(self, class_prompt: str | None, resolution: float, wanted: float | None,
                     mixed_precision: str | None = None):
        """The shared class images of this class prompt, model and resolution."""
        text, items = self._class_view(class_prompt, resolution, wanted, mixed_precision)
        return {self.form["class_summary"]: text, self.form["class_gallery"]: items}

    @guarded(lambda ui: ui.form["class_summary"])
    def add_class_images(self, class_prompt: str | None, resolution: float,
                         wanted: float | None, files: list[str] | None,
                         mixed_precision: str | None = None):
        """Copy your own pictures of the class into the shared class-image folder."""
        if not (class_prompt or "").strip():
            raise InputError("Type the class prompt first: your pictures are stored with it.")
        added, skipped = self.studio.add_class_images(
            class_prompt.strip(), int(resolution), [Path(f) for f in files or []])
        text, items = self._class_view(class_prompt, resolution, wanted, mixed_precision)
        note = f"Added {len(added)} picture{'s' if len(added) != 1 else ''}."
        if skipped:
            note += " Not added: " + "; ".join(f"{n} ({why})" for n, why in skipped) + "."
        return {self.form["class_summary"]: f"{note} {text}", self.form["class_gallery"]: items,
                self.form["class_upload"]: None}
