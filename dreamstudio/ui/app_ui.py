"""The whole app: a header and the Data, Train, Generate, Evaluate and Tune tabs, wired to
one Studio."""

from __future__ import annotations

import gradio as gr

from ..studio import Studio, describe_source
from .data_tab import build_data_tab
from .evaluate_tab import build_evaluate_tab
from .generate_tab import build_generate_tab
from .train_tab import build_train_tab
from .tune_tab import GenerateTargets, build_tune_tab

THEME = gr.themes.Soft()
CSS = """
.ds-header p { margin: 0.2em 0; }
.ds-header h1 { margin-bottom: 0.1em; }
"""


def _header(studio: Studio) -> str:
    kind = {"folder": "local folder", "file": "checkpoint file", "hub": "Hugging Face"}.get(
        describe_source(studio.model), "model")
    device = studio.device or "auto (GPU if available)"
    return (
        "# DreamStudio\n"
        "Teach Stable Diffusion **one subject** from 3-20 photos: "
        "**1 · Data** → **2 · Train** → **3 · Generate** → **4 · Evaluate** → **5 · Tune**.\n\n"
        f"Base model: `{studio.model}` ({studio.family_name}, {kind}, loaded on first use)"
        + (f" · VAE: `{studio.vae}`" if studio.vae else "") + f" · device: {device} · "
        f"workspace: `{studio.workspace.root}`"
    )


def build_ui(studio: Studio) -> gr.Blocks:
    """Build the Gradio app around `studio` (it is shared; nothing here loads a model)."""
    # Uploads and displayed images are copied into Gradio's cache (<workspace>/.gradio-cache,
    # see launch.py); the app keeps its own copies, so cached files may go after a day.
    with gr.Blocks(title="DreamStudio", delete_cache=(3600, 86400)) as demo:
        gr.Markdown(_header(studio), elem_classes="ds-header")
        with gr.Tabs() as tabs:
            with gr.Tab("1 · Data", id="data"):
                data = build_data_tab(studio)
            with gr.Tab("2 · Train", id="train") as train_tab_item:
                train = build_train_tab(studio)
            with gr.Tab("3 · Generate", id="generate") as generate_tab_item:
                generate = build_generate_tab(studio)
            with gr.Tab("4 · Evaluate", id="evaluate") as evaluate_tab_item:
                evaluate = build_evaluate_tab(studio)
            with gr.Tab("5 · Tune", id="tune") as tune_tab_item:
                # "Use this in Generate" fills the Generate tab's controls and opens it.
                g = generate.settings
                tune = build_tune_tab(studio, GenerateTargets(
                    lora=generate.lora, known=generate.known, unet_scale=g["unet_scale"],
                    text_encoder_scale=g["text_encoder_scale"], guidance=g["guidance"],
                    tabs=tabs))

        # The page is built once at startup, so its lists go stale as subjects are prepared
        # and runs finish: refresh them when a page opens and when a tab is opened (cheap
        # folder listings, no model involved).
        quiet = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}
        demo.load(data.refresh_subjects, data.subject, data.subject, **quiet)
        demo.load(train.refresh_subjects, train.subject, train.subject, **quiet)
        demo.load(generate.load_loras, None, [generate.lora, generate.known], **quiet)
        demo.load(generate.refresh_history, generate.lora, generate.history_outputs, **quiet)
        demo.load(evaluate.refresh_loras, evaluate.lora, evaluate.lora, **quiet)
        evaluate_tab_item.select(evaluate.refresh_loras, evaluate.lora, evaluate.lora, **quiet)
        tune_tab_item.select(tune.refresh, [tune.subject, tune.run], tune.outputs, **quiet)
        data.prepare_event.then(train.refresh_subjects, train.subject, train.subject, **quiet)
        train_tab_item.select(train.refresh_subjects, train.subject, train.subject, **quiet)
        generate_tab_item.select(generate.refresh_loras, [generate.lora, generate.known],
                                 [generate.lora, generate.known], **quiet).then(
            generate.refresh_history, generate.lora, generate.history_outputs, **quiet)
    return demo
