"""Train tab: settings for one DreamBooth LoRA run, start/cancel, live progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from ..errors import InputError
from ..jobs import JobStatus
from ..lora_files import is_lora_dir
from ..studio import Studio
from .common import duration, guarded, model_image_size, prepared_subjects

POLL_SECONDS = 1.0
MAX_PLOT_POINTS = 500
PHASES = {
    "queued": "Starting",
    "loading": "Loading the base model",
    "class_images": "Generating class images",
    "training": "Training",
    "saving": "Saving the LoRA",
    "done": "Done",
    "cancelled": "Cancelled",
}


@dataclass
class TrainTab:
    subject: gr.Dropdown
    refresh_subjects: Callable  # current subject -> dropdown update with fresh choices


def status_dict(status: JobStatus) -> dict:
    """The training status as plain JSON data (for the API and the Markdown view)."""
    p, cfg, result = status.progress, status.config, status.result
    message = result.message if result else (p.message if p else "")
    return {
        "state": status.state,
        "phase": p.phase if p else None,
        "step": p.step if p else 0,
        "total_steps": p.total_steps if p else (cfg.steps if cfg else 0),
        "loss": p.loss if p else None,
        "elapsed_seconds": round(p.elapsed, 1) if p else 0.0,
        "eta_seconds": round(p.eta_seconds, 1) if p and p.eta_seconds is not None else None,
        "message": message,
        "error": status.error,
        "subject": cfg.output_dir.parent.parent.name if cfg else None,
        "run": cfg.output_dir.name if cfg else None,
        "lora_dir": str(result.output_dir) if result and result.lora_path else None,
        "num_losses": len(status.losses),
    }


def _bar(step: int, total: int, width: int = 24) -> str:
    filled = int(width * step / total) if total else 0
    return f"`{'█' * filled}{'░' * (width - filled)}` {100 * step // max(total, 1)} %"


def status_markdown(s: dict) -> str:
    if s["state"] == "idle":
        return "No training has run since the app started."
    run = f"*{s['subject']} / {s['run']}*"
    loss = f" · loss {s['loss']:.4f}" if s["loss"] is not None else ""
    steps = f"step {s['step']} / {s['total_steps']}{loss}"
    took = f"Elapsed {duration(s['elapsed_seconds'])}"
    if s["state"] == "running":
        phase = PHASES.get(s["phase"], s["phase"] or "")
        if s["phase"] == "class_images":
            phase = s["message"] or phase
        left = (f" · about **{duration(s['eta_seconds'])} left**"
                if s["eta_seconds"] is not None else "")
        return (f"### ⏳ Training {run}\n**{phase}** · {steps}\n\n"
                f"{_bar(s['step'], s['total_steps'])}\n\n{took}{left}")
    if s["state"] == "completed":
        return (f"### ✅ Finished {run}\n{steps} · {took}\n\n{s['message']}\n\n"
                f"Next: open the **Generate** tab and pick **{s['subject']} / {s['run']}**.")
    if s["state"] == "cancelled":
        return f"### ⏹️ Cancelled {run}\n{s['message']}"
    return f"### ❌ Training {run} failed\n{s['error'] or s['message']}"


def _loss_frame(losses: list[float]) -> pd.DataFrame:
    stride = max(1, -(-len(losses) // MAX_PLOT_POINTS))
    steps = list(range(1, len(losses) + 1))[::stride]
    return pd.DataFrame({"step": steps, "loss": losses[::stride]})


class TrainHandlers:
    def __init__(self, studio: Studio):
        self.studio = studio

    @guarded(outputs=1)
    def start(self, **v) -> str:
        """Start a training run in the background; returns what happened, for the user."""
        use_prior = bool(v["prior_preservation"])
        class_prompt = (v["class_prompt"] or "").strip() if use_prior else None
        if use_prior and not class_prompt:
            raise InputError("Prior preservation needs a class prompt, e.g. 'a photo of dog' "
                             "(the instance prompt without the identifier).")
        cfg = self.studio.training_config(
            (v["subject"] or "").strip(), (v["instance_prompt"] or "").strip(),
            run_name=(v["run_name"] or "").strip() or None, class_prompt=class_prompt,
            num_class_images=int(v["num_class_images"]),
            prior_loss_weight=float(v["prior_loss_weight"]), steps=int(v["steps"]),
            learning_rate=float(v["learning_rate"]), text_encoder_lr=float(v["text_encoder_lr"]),
            train_text_encoder=bool(v["train_text_encoder"]), rank=int(v["rank"]),
            resolution=int(v["resolution"]), seed=int(v["seed"]),
            batch_size=int(v["batch_size"]),
        )
        replaces = is_lora_dir(cfg.output_dir)
        self.studio.start_training(cfg)
        text = (f"Training started: **{cfg.output_dir.parent.parent.name} / "
                f"{cfg.output_dir.name}**, {cfg.steps} steps; progress appears below.")
        if replaces:
            text += " When it finishes it replaces the earlier LoRA of that name."
        return text

    @guarded(outputs=1)
    def cancel(self) -> str:
        if self.studio.cancel_training():
            return "Cancelling: the run stops after the current step and writes no LoRA."
        return "No training is running, so there is nothing to cancel."

    def status(self) -> dict:
        """The current training status as JSON (state, phase, step, loss, times, message)."""
        return status_dict(self.studio.training_status())

    def poll(self, last: tuple | None):
        """Timer tick: refresh the status text, and the loss plot when it has new points."""
        status = self.studio.training_status()
        text = status_markdown(status_dict(status))
        run = str(status.config.output_dir) if status.config else None
        key = (text, run, len(status.losses))
        if last is not None and tuple(last) == key:
            return gr.skip(), gr.skip(), last
        plot = gr.skip()
        if last is None or tuple(last)[1:] != key[1:]:
            plot = _loss_frame(status.losses)
        return text, plot, key

    def subjects(self, current: str | None):
        choices = prepared_subjects(self.studio)
        value = current if current in choices else (choices[0] if choices else None)
        return gr.update(choices=choices, value=value)


def _settings(studio: Studio) -> dict[str, gr.components.Component]:
    """The run's settings widgets, keyed by the start handler's parameter names."""
    subjects = prepared_subjects(studio)
    w: dict[str, gr.components.Component] = {}
    w["subject"] = gr.Dropdown(
        subjects, value=subjects[0] if subjects else None, label="Subject",
        allow_custom_value=True,  # choices change at runtime; the backend checks the name
        info="A subject whose photos you prepared on the Data tab.",
    )
    w["instance_prompt"] = gr.Textbox(
        label="Instance prompt", placeholder="a photo of sks dog",
        info="A rare made-up word (sks) plus what the subject is: 'a photo of sks dog', "
             "'a photo of sks man'. Use the same words later in your prompts.",
    )
    with gr.Accordion("Prior preservation (optional, slower)", open=False):
        w["prior_preservation"] = gr.Checkbox(
            False, label="Prior preservation",
            info="Also trains on generated pictures of the class, so the model keeps "
                 "knowing what an ordinary dog/man looks like. Generates class images first.",
        )
        w["class_prompt"] = gr.Textbox(
            "", label="Class prompt", placeholder="a photo of dog",
            info="The instance prompt without the rare word, e.g. 'a photo of dog'.",
        )
        w["num_class_images"] = gr.Number(
            100, label="Number of class images", precision=0, minimum=1,
            info="Generated once and reused; 100-200 is typical.",
        )
        w["prior_loss_weight"] = gr.Number(
            1.0, label="Prior loss weight", minimum=0, step=0.1,
            info="How much the class pictures count next to your photos (1.0 = equally).",
        )
    with gr.Accordion("Training settings", open=True):
        with gr.Row():
            w["steps"] = gr.Number(
                300, label="Steps", precision=0, minimum=1,
                info="Training steps. ~300 suits 5-10 photos; far more can over-fit.",
            )
            w["resolution"] = gr.Slider(
                64, 1024, value=model_image_size(studio.model), step=64, label="Resolution",
                info="Training image side in pixels; the base model's own size is best.",
            )
        with gr.Row():
            w["learning_rate"] = gr.Number(
                5e-4, label="UNet learning rate", minimum=0, step=1e-5,
                info="Step size for the image model's LoRA. 5e-4 is a good start.",
            )
            w["text_encoder_lr"] = gr.Number(
                1e-4, label="Text-encoder learning rate", minimum=0, step=1e-5,
                info="Step size for the text model's LoRA; keep it below the UNet's.",
            )
        w["train_text_encoder"] = gr.Checkbox(
            True, label="Train the text encoder too",
            info="Helps the model tie your rare word to the subject; slightly slower.",
        )
        with gr.Row():
            w["rank"] = gr.Slider(
                1, 64, value=4, step=1, label="LoRA rank",
                info="Capacity of the LoRA: 4-8 is enough for one subject.",
            )
            w["batch_size"] = gr.Slider(
                1, 8, value=1, step=1, label="Batch size",
                info="Photos per step; more needs more memory.",
            )
        with gr.Row():
            w["seed"] = gr.Number(
                0, label="Seed", precision=0,
                info="Same seed + same settings = same result.",
            )
            w["run_name"] = gr.Textbox(
                "", label="Run name", placeholder="automatic: run-<date>-<time>",
                info="Name of this LoRA; an existing name is replaced.",
            )
    return w


def build_train_tab(studio: Studio) -> TrainTab:
    handlers = TrainHandlers(studio)
    gr.Markdown(
        "Teach the model your subject. On a GPU 300 steps take a few minutes; on a CPU "
        "expect hours at 512 px. You can keep using the other tabs while it trains."
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            settings = _settings(studio)
            with gr.Row():
                start_btn = gr.Button("Start training", variant="primary")
                cancel_btn = gr.Button("Cancel", variant="stop")
        with gr.Column(scale=1, min_width=340):
            message = gr.Markdown()
            status = gr.Markdown(status_markdown(handlers.status()))
            plot = gr.LinePlot(
                _loss_frame([]), x="step", y="loss", label="Training loss",
                x_title="step", y_title="loss",
            )
            gr.Markdown(
                "The loss jumps around from step to step (each step uses a random noise "
                "level); a slow downward drift is all you should expect."
            )
    last = gr.State(None)
    timer = gr.Timer(POLL_SECONDS)
    timer.tick(handlers.poll, last, [status, plot, last], api_visibility="private",
               show_progress="hidden", queue=False)
    start_btn.click(handlers.start, inputs_kwargs=settings, outputs=message,
                    api_name="start_training")
    cancel_btn.click(handlers.cancel, None, message, api_name="cancel_training")
    gr.api(handlers.status, api_name="training_status")
    return TrainTab(subject=settings["subject"], refresh_subjects=handlers.subjects)
