"""Generate tab: pictures from the base model plus (optionally) a trained subject LoRA."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from ..config import GenerateConfig
from ..errors import InputError
from ..lora_files import WEIGHTS_NAME
from ..studio import Studio
from ..workspace import LoraEntry
from .common import guarded, model_image_size

BASE_MODEL = "(base model, no LoRA)"


@dataclass
class GenerateTab:
    lora: gr.Dropdown
    known: gr.State  # the labels the page has already seen, to spot new LoRAs
    refresh_loras: Callable  # (current, known) -> (dropdown update, known)
    load_loras: Callable  # () -> (dropdown update, known), for a freshly opened page


def lora_choices(studio: Studio) -> list[str]:
    return [BASE_MODEL] + [entry.label for entry in studio.loras()]


def newest_lora(studio: Studio) -> str:
    entries = studio.loras()
    if not entries:
        return BASE_MODEL
    return max(entries, key=lambda e: (e.path / WEIGHTS_NAME).stat().st_mtime).label


def lora_summary(entry: LoraEntry | None) -> str:
    if entry is None:
        return "The base model alone, without any subject."
    cfg = entry.info.get("config", {})
    parts = [f"trained on *'{cfg.get('instance_prompt', '?')}'*"]
    if cfg.get("steps"):
        parts.append(f"{cfg['steps']} steps")
    if cfg.get("rank"):
        parts.append(f"rank {cfg['rank']}")
    if entry.info.get("final_loss") is not None:
        parts.append(f"final loss {entry.info['final_loss']:.4f}")
    if entry.info.get("finished_at"):
        parts.append(f"finished {entry.info['finished_at'][:16].replace('T', ' ')}")
    return (f"**{entry.label}**: " + ", ".join(parts)
            + ". Put the same words (e.g. 'sks dog') in your prompt.")


def _caption(config: GenerateConfig, label: str, size: tuple[int, int], seconds: float) -> str:
    text = (f"{config.num_images} image(s), {size[0]}x{size[1]} px, seeds {config.seed}"
            f"-{config.seed + config.num_images - 1}, {config.steps} steps, "
            f"guidance {config.guidance:g}, ")
    if config.lora_dir is None:
        text += "base model"
    else:
        text += (f"LoRA **{label}** (UNet {config.unet_scale:g}, "
                 f"text encoder {config.text_encoder_scale:g})")
    return text + f", {seconds:.1f} s. Saved in the workspace with their settings."


class GenerateHandlers:
    def __init__(self, studio: Studio):
        self.studio = studio

    def _entry(self, label: str | None) -> LoraEntry | None:
        if not label or label == BASE_MODEL:
            return None
        entry = self.studio.find_lora(label)
        if entry is None:
            raise InputError(f"The LoRA '{label}' no longer exists: press ↻ to refresh the list.")
        return entry

    @guarded(outputs=2, status=1)
    def generate(self, progress=gr.Progress(), **v):  # noqa: B008 - Gradio idiom
        """Generate images; returns (gallery of saved PNGs, caption with the settings)."""
        entry = self._entry(v["lora"])
        config = GenerateConfig(
            prompt=v["prompt"] or "", negative_prompt=v["negative_prompt"] or "",
            lora_dir=entry.path if entry else None,
            unet_scale=float(v["unet_scale"]), text_encoder_scale=float(v["text_encoder_scale"]),
            guidance=float(v["guidance"]), steps=int(v["steps"]), seed=int(v["seed"]),
            num_images=int(v["num_images"]),
            height=int(v["height"]) or None, width=int(v["width"]) or None,
        )
        progress(0, desc="Loading the model (first time only)")
        started = time.monotonic()
        images = self.studio.generate(
            config, subject=entry.subject if entry else None,
            progress=lambda step, total: progress((step, total), desc="Denoising"),
        )
        seconds = time.monotonic() - started
        gallery = [(str(im.path), f"seed {im.seed}") for im in images]
        size = (images[0].image.width, images[0].image.height)
        return gallery, _caption(config, v["lora"], size, seconds)

    def refresh(self, current: str | None, known: list[str] | None):
        """Fresh choices; a LoRA that appeared since the page last looked gets selected."""
        choices = lora_choices(self.studio)
        new = [c for c in choices if known is not None and c not in known]
        if new:
            newest = newest_lora(self.studio)
            value = newest if newest in new else new[-1]
        else:
            value = current if current in choices else newest_lora(self.studio)
        return gr.update(choices=choices, value=value), choices

    def load(self):
        choices = lora_choices(self.studio)
        return gr.update(choices=choices, value=newest_lora(self.studio)), choices

    def describe(self, label: str | None, prompt: str):
        """Show what the picked LoRA was trained on; suggest its prompt if none is typed."""
        entry = self.studio.find_lora(label) if label and label != BASE_MODEL else None
        if entry is None and label and label != BASE_MODEL:
            return "This LoRA no longer exists: press ↻.", gr.skip()
        suggestion = gr.skip()
        if entry is not None and not (prompt or "").strip():
            suggestion = entry.info.get("config", {}).get("instance_prompt") or gr.skip()
        return lora_summary(entry), suggestion

    def list_loras(self) -> list[str]:
        """Labels of the trained LoRAs ('subject / run'), the base-model entry first."""
        return lora_choices(self.studio)


def _size_slider(name: str, native: int) -> gr.Slider:
    return gr.Slider(0, 1024, value=0, step=8, label=f"{name} (pixels)",
                     info=f"0 = the model's own size ({native} px); else 64-1024.")


def _settings(studio: Studio) -> dict[str, gr.components.Component]:
    w: dict[str, gr.components.Component] = {}
    native = model_image_size(studio.model)
    w["prompt"] = gr.Textbox(
        label="Prompt", lines=2, placeholder="a photo of sks dog on a beach at sunset",
        info="Describe the picture; include your subject's words (e.g. 'sks dog').",
    )
    w["negative_prompt"] = gr.Textbox(
        "", label="Negative prompt", placeholder="blurry, low quality",
        info="What to keep out of the picture (optional).",
    )
    with gr.Row():
        w["unet_scale"] = gr.Slider(
            0, 2, value=1.0, step=0.05, label="LoRA strength (UNet)",
            info="How strongly the subject's look is applied; 0 = off.",
        )
        w["text_encoder_scale"] = gr.Slider(
            0, 2, value=1.0, step=0.05, label="LoRA strength (text encoder)",
            info="How strongly the subject's word is applied; 0 = off.",
        )
    with gr.Row():
        w["guidance"] = gr.Slider(
            1, 20, value=7.5, step=0.5, label="Guidance",
            info="How literally to follow the prompt; 5-9 is usual.",
        )
        w["steps"] = gr.Slider(
            1, 100, value=30, step=1, label="Steps",
            info="Denoising steps: more is slower and a little finer; 25-40 is usual.",
        )
    with gr.Row():
        w["seed"] = gr.Number(
            0, label="Seed", precision=0, minimum=0,
            info="Same seed + same settings = same picture; image n uses seed + n.",
        )
        w["num_images"] = gr.Slider(1, 8, value=1, step=1, label="Images",
                                    info="How many pictures per click.")
    with gr.Row():
        w["height"] = _size_slider("Height", native)
        w["width"] = _size_slider("Width", native)
    return w


def build_generate_tab(studio: Studio) -> GenerateTab:
    handlers = GenerateHandlers(studio)
    gr.Markdown(
        "Draw pictures with your subject. Sliders take effect on the next click of "
        "**Generate**; changing them reloads nothing, so trying strengths is quick."
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            with gr.Row(equal_height=True):
                current = newest_lora(studio)
                lora = gr.Dropdown(
                    lora_choices(studio), value=current, label="Subject LoRA", scale=5,
                    allow_custom_value=True,  # new runs appear at runtime; checked on use
                    info="A LoRA you trained on the Train tab, or the plain base model.",
                )
                refresh = gr.Button("↻", scale=0, min_width=48, size="lg")
            about = gr.Markdown(lora_summary(studio.find_lora(current)))
            settings = _settings(studio)
            generate_btn = gr.Button("Generate", variant="primary")
        with gr.Column(scale=1, min_width=340):
            gallery = gr.Gallery(label="Generated images", columns=2, height=520,
                                 object_fit="contain", format="png")
            caption = gr.Markdown()

    known = gr.State(lora_choices(studio))
    refresh.click(handlers.refresh, [lora, known], [lora, known], api_visibility="private",
                  queue=False)
    lora.change(handlers.describe, [lora, settings["prompt"]], [about, settings["prompt"]],
                api_visibility="private", queue=False)
    generate_btn.click(handlers.generate, inputs_kwargs={"lora": lora, **settings},
                       outputs=[gallery, caption], api_name="generate")
    gr.api(handlers.list_loras, api_name="list_loras")
    return GenerateTab(lora=lora, known=known, refresh_loras=handlers.refresh,
                       load_loras=handlers.load)
