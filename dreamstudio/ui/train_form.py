"""The Train tab's settings form: its widgets, their values as TrainConfig settings, and
filling it from a preset or from a run's saved settings."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from ..config import LR_SCHEDULERS, MIN_SNR_GAMMA, OPTIMIZERS, TrainConfig, default_of
from ..errors import InputError
from ..studio import Preset, Studio, class_noun_of, compose_prompts, parse_template_prompt
from .common import model_image_size, prepared_subjects
from .train_text import family_markdown

DEFAULT_IDENTIFIER = "sks"
OPTIMIZER_LABELS = list(zip(("AdamW", "8-bit AdamW", "Prodigy"), OPTIMIZERS, strict=True))
MIXED_PRECISION_LABELS = [
    ("auto (recommended)", "auto"),
    ("no: full precision", "no"),
    ("fp16: NVIDIA GPUs", "fp16"),
    ("bf16: recent GPUs/CPUs", "bf16"),
]


def _default(name: str):
    return default_of(TrainConfig, name)


def _text(value) -> str | None:
    text = (value or "").strip()
    return text or None


def _alpha(value) -> int | None:
    """The alpha box's value as the setting: 0 or empty is "the rank"."""
    return int(value) if value else None


def _min_snr(value) -> float | None:
    """The Min-SNR checkbox as min_snr_gamma: on is the usual gamma (a number, as in a
    run's settings, is kept)."""
    if value is True:
        return MIN_SNR_GAMMA
    return float(value) if value else None


PRIOR_MODE_LABELS = [
    ("class images (generated first)", "class_images"),
    ("the base model's prediction (no class images)", "prediction"),
]


# TrainConfig settings taken from the form as they are: name -> (convert, label for errors).
FIELDS: dict[str, tuple[Callable, str]] = {
    "steps": (int, "Steps"),
    "learning_rate": (float, "UNet learning rate"),
    "text_encoder_lr": (float, "Text-encoder learning rate"),
    "train_text_encoder": (bool, "Train the text encoder"),
    "rank": (int, "LoRA rank"),
    "resolution": (int, "Resolution"),
    "seed": (int, "Seed"),
    "batch_size": (int, "Batch size"),
    "num_class_images": (int, "Number of class images"),
    "prior_loss_weight": (float, "Prior loss weight"),
    "flip": (bool, "Random flip"),
    "export_kohya": (bool, "Export for AUTOMATIC1111 / ComfyUI"),
    "mixed_precision": (str, "Mixed precision"),
    "gradient_checkpointing": (bool, "Gradient checkpointing"),
    "optimizer": (str, "Optimizer"),
    "use_dora": (bool, "DoRA"),
    "lora_alpha": (_alpha, "LoRA alpha"),
    "lr_scheduler": (str, "Learning-rate schedule"),
    "lr_warmup_steps": (int, "Warm-up steps"),
    "checkpoint_every": (int, "Checkpoint every"),
    "keep_checkpoints": (int, "Checkpoints to keep"),
    "score_checkpoints": (bool, "Score checkpoints"),
    "validation_prompt": (_text, "Validation prompt"),
    "validation_every": (int, "Validation image every"),
    # Pivotal tuning
    "pivotal": (bool, "Pivotal tuning"),
    "pivotal_tokens": (int, "Pivotal tokens"),
    "pivotal_lr": (float, "Pivotal learning rate"),
    "pivotal_stop": (float, "Train the tokens for (fraction of the steps)"),
    # Loss-side methods
    "prior_mode": (str, "Prior from"),
    "min_snr_gamma": (_min_snr, "Min-SNR weighting"),
    "noise_offset": (float, "Offset noise"),
    "face_loss_weight": (float, "Loss weight on the face"),
    "face_outside_weight": (float, "Loss weight outside the face"),
}
# Widgets a preset or a saved run may fill, besides FIELDS.
PROMPT_FIELDS = ("instance_prompt", "identifier", "class_noun", "prior_preservation",
                 "class_prompt")
FILLABLE = (*FIELDS, *PROMPT_FIELDS)


def train_settings(values: dict) -> dict:
    """The form's values as TrainConfig keyword arguments; an empty number is refused by
    name (Gradio sends None for a cleared Number box)."""
    settings = {}
    for name, (convert, label) in FIELDS.items():
        value = values.get(name)
        if value is None and convert in (int, float):
            raise InputError(f"'{label}' is empty: type a number.")
        settings[name] = convert(value)
    return settings


def form_values(settings: dict, identifier: str | None = None) -> dict:
    """Widget values for a preset's or a run's settings (TrainConfig names): each present
    setting fills its field, and the prompts fill the identifier, class noun and prompts."""
    values = {k: settings[k] for k in FIELDS if k in settings}
    if "validation_prompt" in values:
        values["validation_prompt"] = values["validation_prompt"] or ""
    if "lora_alpha" in values:
        values["lora_alpha"] = values["lora_alpha"] or 0
    if "optimizer" not in settings and settings.get("use_8bit_adam"):
        values["optimizer"] = "adamw8bit"  # a run saved before the optimizer choice
    if "min_snr_gamma" in values:  # a checkbox: a command line's own gamma becomes the usual
        values["min_snr_gamma"] = values["min_snr_gamma"] is not None
    if "class_prompt" in settings:
        class_prompt = settings["class_prompt"]
        values["prior_preservation"] = bool(class_prompt)
        if class_prompt:
            values["class_prompt"] = class_prompt
            values["class_noun"] = class_noun_of(class_prompt)
    if settings.get("instance_prompt"):
        values["instance_prompt"] = settings["instance_prompt"]
        parts = parse_template_prompt(settings["instance_prompt"])
        if parts:
            values["identifier"], values["class_noun"] = parts
    elif identifier and values.get("class_noun"):
        values["instance_prompt"] = compose_prompts(identifier, values["class_noun"])[0]
    return values


def preset_markdown(presets: dict[str, Preset], name: str | None) -> str:
    preset = presets.get(name or "")
    return f"*{preset.description}*" if preset else "Custom settings."


def build_form(studio: Studio) -> dict[str, gr.components.Component]:
    """The run's widgets, keyed by setting name (TrainConfig's where there is one)."""
    subjects = prepared_subjects(studio)
    w: dict[str, gr.components.Component] = {}
    with gr.Row():
        w["subject"] = gr.Dropdown(
            subjects, value=subjects[0] if subjects else None, label="Subject",
            allow_custom_value=True,  # choices change at runtime; the backend checks the name
            info="A subject whose photos you prepared on the Data tab.",
        )
        w["run_name"] = gr.Dropdown(
            [], value="", label="Run", allow_custom_value=True,
            info="Type a new name for a new LoRA (empty: run-<date>-<time>), or pick an "
                 "earlier run to resume it.",
        )
    w["run_info"] = gr.Markdown("A new run.")
    w["family"] = gr.Markdown(family_markdown(studio.family_name, studio.train_defaults()))
    presets = studio.presets
    first = next(iter(presets))
    with gr.Row(equal_height=True):
        w["preset"] = gr.Dropdown(
            list(presets), value=first, label="Preset", scale=2,
            info="A starting point for this model family: fills the settings below, which "
                 "you can still change.",
        )
        w["preset_info"] = gr.Markdown(preset_markdown(presets, first))

    gr.Markdown("#### The subject's name in prompts")
    with gr.Row():
        w["identifier"] = gr.Textbox(
            DEFAULT_IDENTIFIER, label="Identifier",
            info="A rare word that becomes your subject's name; Suggest picks some from the "
                 "model's own vocabulary.",
        )
        w["class_noun"] = gr.Textbox(
            "", label="Class noun", placeholder="dog",
            info="What the subject is: dog, man, woman, backpack...",
        )
    with gr.Row(equal_height=True):
        w["suggest"] = gr.Button("Suggest rare identifiers", scale=0, min_width=200)
        w["suggestions"] = gr.Radio([], show_label=False, visible=False, scale=1,
                                    container=False)
    w["identifier_check"] = gr.Markdown(
        "Type a class noun to see the prompts; the identifier is checked as you type.")
    w["instance_prompt"] = gr.Textbox(
        label="Instance prompt", placeholder="a photo of sks dog",
        info="Made from the identifier and class noun; you may edit it. Use the same words "
             "later in your prompts (e.g. 'sks dog on a beach').",
    )
    return w


def build_prior_preservation(w: dict) -> dict[str, gr.components.Component]:
    """Prior preservation settings and the shared class images of the chosen class."""
    with gr.Accordion("Prior preservation (optional, slower)", open=False):
        w["prior_preservation"] = gr.Checkbox(
            False, label="Prior preservation",
            info="Also trains on pictures of the class, so the model keeps knowing what an "
                 "ordinary dog/man looks like. Missing class pictures are generated first.",
        )
        w["class_prompt"] = gr.Textbox(
            "", label="Class prompt", placeholder="a photo of dog",
            info="Made from the class noun: the instance prompt without the identifier.",
        )
        w["prior_mode"] = gr.Radio(
            PRIOR_MODE_LABELS, value=_default("prior_mode"), label="Prior from",
            info="The base model's prediction needs no class images (no minutes of drawing "
                 "them first) but costs about one more forward pass per step; class images "
                 "are the classic DreamBooth way.",
        )
        with gr.Row():
            w["num_class_images"] = gr.Number(
                _default("num_class_images"), label="Number of class images", precision=0,
                minimum=1,
                info="Made once and reused; 100-200 is typical.",
            )
            w["prior_loss_weight"] = gr.Number(
                _default("prior_loss_weight"), label="Prior loss weight", minimum=0, step=0.1,
                info="How much the class pictures count next to your photos (1 = equally).",
            )
        w["class_summary"] = gr.Markdown("Type a class prompt to see its class images.")
        w["class_gallery"] = gr.Gallery(
            label="Class images", columns=6, height=220, object_fit="cover",
            allow_preview=True,
        )
        with gr.Row():
            w["class_upload"] = gr.File(
                label="Add your own class pictures", file_count="multiple",
                file_types=["image"], height=110, scale=3,
            )
            w["class_refresh"] = gr.Button("↻ Refresh", scale=1, min_width=90)
    return w


def build_training_settings(studio: Studio, w: dict) -> dict[str, gr.components.Component]:
    # The base model's family replaces some of TrainConfig's (SD 1.x) defaults.
    family = studio.train_defaults()

    def start(name: str):
        return family.get(name, _default(name))

    with gr.Accordion("Training settings", open=True):
        with gr.Row():
            w["steps"] = gr.Number(
                start("steps"), label="Steps", precision=0, minimum=1,
                info="Training steps. The default suits 5-10 photos; far more can over-fit.",
            )
            w["resolution"] = gr.Slider(
                64, 1024, value=model_image_size(studio.model, start("resolution")), step=64,
                label="Resolution",
                info="Training image side in pixels; the base model's own size is best.",
            )
        with gr.Row():
            w["learning_rate"] = gr.Number(
                start("learning_rate"), label="UNet learning rate", minimum=0, step=1e-5,
                info="Step size for the image model's LoRA; the default is a good start.",
            )
            w["text_encoder_lr"] = gr.Number(
                start("text_encoder_lr"), label="Text-encoder learning rate", minimum=0,
                step=1e-5,
                info="Step size for the text model's LoRA; keep it below the UNet's.",
            )
        with gr.Row():
            w["rank"] = gr.Slider(
                1, 64, value=_default("rank"), step=1, label="LoRA rank",
                info="Capacity of the LoRA: 4-8 is enough for one subject.",
            )
            w["batch_size"] = gr.Slider(
                1, 8, value=_default("batch_size"), step=1, label="Batch size",
                info="Photos per step; more needs more memory.",
            )
        with gr.Row():
            w["lora_alpha"] = gr.Number(
                _default("lora_alpha") or 0, label="LoRA alpha", precision=0, minimum=0,
                info="The LoRA's strength is alpha / rank; 0 = the rank (strength 1). A "
                     "lower alpha trains more gently at the same learning rate.",
            )
            w["use_dora"] = gr.Checkbox(
                _default("use_dora"), label="DoRA",
                info="Trains each layer's size apart from its direction: often a closer "
                     "likeness at low rank, slower per step. diffusers, ComfyUI and Forge "
                     "load it; AUTOMATIC1111 may not.",
            )
        with gr.Row():
            w["train_text_encoder"] = gr.Checkbox(
                _default("train_text_encoder"), label="Train the text encoder too",
                info="Helps the model tie your identifier to the subject; slightly slower.",
            )
            w["flip"] = gr.Checkbox(
                _default("flip"), label="Random flip",
                info="Mirrors photos at random, like having twice as many. Leave off for "
                     "lopsided subjects (text, a parting on one side).",
            )
        w["export_kohya"] = gr.Checkbox(
            _default("export_kohya"), label="Export for AUTOMATIC1111 / ComfyUI",
            info="Also save one .safetensors file that AUTOMATIC1111, Forge and ComfyUI load.",
        )
    return w


def build_pivotal(w: dict) -> dict[str, gr.components.Component]:
    with gr.Accordion("Pivotal tuning: new tokens for the identifier", open=False):
        w["pivotal"] = gr.Checkbox(
            _default("pivotal"), label="Pivotal tuning",
            info="Learns new words for your identifier along with the LoRA: better likeness "
                 "for faces and subjects unlike anything the model knows; each step runs the "
                 "text encoder (a little slower when it is not trained).",
        )
        with gr.Row():
            w["pivotal_tokens"] = gr.Slider(
                1, 8, value=_default("pivotal_tokens"), step=1, label="Tokens",
                info="How many new tokens stand for the identifier; 1-2 suit one subject.",
            )
            w["pivotal_lr"] = gr.Number(
                _default("pivotal_lr"), label="Token learning rate", minimum=0, step=1e-5,
                info="Step size of the new tokens' embedding; too high and prompts around "
                     "the subject stop working.",
            )
            w["pivotal_stop"] = gr.Slider(
                0.05, 1.0, value=_default("pivotal_stop"), step=0.05,
                label="Train the tokens for (fraction of the steps)",
                info="Below 1 the tokens settle first and the LoRA alone finishes the run.",
            )
        gr.Markdown("The LoRA's folder gets an `embedding/` folder: copy its "
                    "`<identifier>.safetensors` into AUTOMATIC1111's or ComfyUI's embeddings "
                    "folder and prompt with the identifier as usual.")
    return w


def build_advanced(w: dict) -> dict[str, gr.components.Component]:
    with gr.Accordion("Advanced: previews, checkpoints, memory, schedule, loss",
                      open=False):
        with gr.Row():
            w["validation_every"] = gr.Number(
                _default("validation_every"), label="Validation image every (steps)",
                precision=0, minimum=0,
                info="Draw a preview every N steps to watch the subject appear (0 = off). "
                     "Each costs a few seconds (minutes on a CPU).",
            )
            w["validation_prompt"] = gr.Textbox(
                _default("validation_prompt") or "", label="Validation prompt",
                placeholder="empty: the instance prompt",
                info="e.g. 'a photo of sks dog on the beach' shows whether the subject "
                     "goes into new scenes.",
            )
        with gr.Row():
            w["checkpoint_every"] = gr.Number(
                _default("checkpoint_every"), label="Checkpoint every (steps)", precision=0,
                minimum=0,
                info="Save a point to resume from (0 = never): a cancelled or crashed run "
                     "continues from the latest one.",
            )
            w["keep_checkpoints"] = gr.Number(
                _default("keep_checkpoints"), label="Checkpoints to keep", precision=0, minimum=1,
                info="Older ones are deleted to save disk space.",
            )
        w["score_checkpoints"] = gr.Checkbox(
            _default("score_checkpoints"), label="Score checkpoints",
            info=f"To find the best step of a long run: each checkpoint and the final LoRA "
                 f"draw {_default('score_images')} fixed prompts and score likeness and "
                 "prompt fit (plotted beside the loss). Costs those images per checkpoint "
                 "and loads DINO and CLIP (downloaded once).",
        )
        with gr.Row():
            w["mixed_precision"] = gr.Dropdown(
                MIXED_PRECISION_LABELS, value=_default("mixed_precision"), label="Mixed precision",
                info="Half precision is faster and needs less memory; 'auto' picks what "
                     "this computer does well. Choose 'no' if the loss becomes NaN.",
            )
            w["seed"] = gr.Number(
                _default("seed"), label="Seed", precision=0,
                info="Same seed + same settings = same result.",
            )
        with gr.Row():
            w["gradient_checkpointing"] = gr.Checkbox(
                _default("gradient_checkpointing"), label="Gradient checkpointing",
                info="Less GPU memory, about 30% slower. Try it after an 'out of memory'.",
            )
            w["optimizer"] = gr.Dropdown(
                OPTIMIZER_LABELS, value=_default("optimizer"), label="Optimizer",
                info="AdamW is the default. 8-bit AdamW keeps its memory in 8 bits (NVIDIA "
                     "GPU + bitsandbytes). Prodigy finds its own step size (set both "
                     "learning rates to 1; needs pip install prodigyopt), a little more "
                     "memory than AdamW.",
            )
        with gr.Row():
            w["lr_scheduler"] = gr.Dropdown(
                list(LR_SCHEDULERS), value=_default("lr_scheduler"), label="Learning-rate schedule",
                info="constant keeps the rate; linear and cosine lower it towards the end.",
            )
            w["lr_warmup_steps"] = gr.Number(
                _default("lr_warmup_steps"), label="Warm-up steps", precision=0, minimum=0,
                info="Steps at the start with a rising rate (0 = none; not used by "
                     "'constant'); helps with high rates.",
            )
        with gr.Row():
            w["min_snr_gamma"] = gr.Checkbox(
                _default("min_snr_gamma") is not None, label="Min-SNR weighting",
                info=f"Weighs the loss by noise level (gamma {MIN_SNR_GAMMA:g}): steadier "
                     "training that often gets there in fewer steps; costs nothing.",
            )
            w["noise_offset"] = gr.Number(
                _default("noise_offset"), label="Offset noise", minimum=0, maximum=1,
                step=0.01,
                info="e.g. 0.05 when your photos are very dark or bright (night shots, "
                     "white backgrounds); 0 = off; costs nothing.",
            )
        with gr.Row():
            w["face_loss_weight"] = gr.Number(
                _default("face_loss_weight"), label="Loss weight on the face", minimum=0,
                step=0.1,
                info="For people (photos prepared in face mode): how much the face found "
                     "at crop time counts; 1 and 1 = off.",
            )
            w["face_outside_weight"] = gr.Number(
                _default("face_outside_weight"), label="Loss weight outside the face",
                minimum=0, step=0.1,
                info="e.g. 0.3 so the LoRA learns the face rather than clothes and "
                     "background; photos without a face box count fully; costs nothing.",
            )
    return w
