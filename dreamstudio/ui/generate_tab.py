"""Generate tab: pictures from the base model plus (optionally) a trained subject LoRA.

Also X/Y grids (compare LoRA strengths, guidance, steps, seeds or samplers side by side),
a Stop button for both, and the subject's history: earlier images whose settings one
click puts back into the controls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..config import GenerateConfig
from ..errors import InputError
from ..generate.grid import AXES, MAX_CELLS, NO_AXIS, GridAxis, GridConfig, GridProgress
from ..generate.history import HistoryItem, settings_from
from ..generate.png_metadata import a1111_parameters
from ..generate.samplers import DEFAULT_SAMPLER, SAMPLER_NAMES
from ..lora.files import WEIGHTS_NAME
from ..studio import Studio
from ..workspace.layout import LoraEntry
from .common import guarded, model_image_size

BASE_MODEL = "(base model, no LoRA)"
RUN_KIND = "generate"  # the Studio's stop flag shared by Generate and Make grid
AXIS_CHOICES = [(spec.label, name) for name, spec in AXES.items()]
VALUES_INFO = (
    "Comma-separated values, or ranges: '0-1 (+0.25)' = 0 to 1 in steps of 0.25, "
    "'0-1 [5]' = 5 evenly spaced values, '1-4' = 1, 2, 3, 4. Samplers by name, e.g. "
    f"'Euler a, DDIM'. At most {MAX_CELLS} images per grid."
)
# Controls a history click fills, in this order (GenerateConfig names plus the LoRA).
RESTORED = ("prompt", "negative_prompt", "unet_scale", "text_encoder_scale", "guidance",
            "steps", "seed", "height", "width", "sampler")


@dataclass
class GenerateTab:
    lora: gr.Dropdown
    known: gr.State  # the labels the page has already seen, to spot new LoRAs
    refresh_loras: Callable  # (current, known) -> (dropdown update, known)
    load_loras: Callable  # () -> (dropdown update, known), for a freshly opened page
    history_outputs: list  # what refresh_history fills
    refresh_history: Callable  # (lora label) -> history gallery, file names, note


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


def _settings_text(config: GenerateConfig, label: str) -> str:
    text = f"{config.steps} steps, {config.sampler} sampler, guidance {config.guidance:g}, "
    if config.lora_dir is None:
        return text + "base model"
    return text + (f"LoRA **{label}** (UNet {config.unet_scale:g}, "
                   f"text encoder {config.text_encoder_scale:g})")


def _caption(config: GenerateConfig, label: str, size: tuple[int, int], seconds: float) -> str:
    return (f"{config.num_images} image(s), {size[0]}x{size[1]} px, seeds {config.seed}"
            f"-{config.seed + config.num_images - 1}, {_settings_text(config, label)}, "
            f"{seconds:.1f} s. Saved in the workspace with their settings.")


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

    def _config(self, v: dict) -> tuple[GenerateConfig, LoraEntry | None]:
        entry = self._entry(v["lora"])
        config = GenerateConfig(
            prompt=v["prompt"] or "", negative_prompt=v["negative_prompt"] or "",
            lora_dir=entry.path if entry else None,
            unet_scale=float(v["unet_scale"]), text_encoder_scale=float(v["text_encoder_scale"]),
            guidance=float(v["guidance"]), steps=int(v["steps"]), seed=int(v["seed"]),
            num_images=int(v.get("num_images") or 1),
            height=int(v["height"] or 0) or None, width=int(v["width"] or 0) or None,
            sampler=v.get("sampler") or DEFAULT_SAMPLER,
        )
        return config, entry

    @guarded(outputs=2, status=1)
    def generate(self, progress=gr.Progress(), **v):  # noqa: B008 - Gradio idiom
        """Generate images; returns (gallery of saved PNGs, caption with the settings)."""
        config, entry = self._config(v)
        progress(0, desc="Loading the model (first time only)")
        started = time.monotonic()
        with self.studio.cancellable(RUN_KIND) as cancel:
            images = self.studio.generate(
                config, subject=entry.subject if entry else None,
                progress=lambda step, total: progress((step, total), desc="Denoising"),
                cancel=cancel,
            )
            stopped = cancel.is_set()
        if stopped:
            return gr.skip(), "⏹️ Stopped: the unfinished image(s) were not saved."
        seconds = time.monotonic() - started
        gallery = [(str(im.path), f"seed {im.seed}") for im in images]
        size = (images[0].image.width, images[0].image.height)
        return gallery, _caption(config, v["lora"], size, seconds)

    @guarded(outputs=2, status=1)
    def grid(self, progress=gr.Progress(), **v):  # noqa: B008 - Gradio idiom
        """Generate an X/Y grid; returns (gallery with the grid image, caption)."""
        config, entry = self._config(v)
        x = GridAxis.parse(v["x_axis"], v["x_values"])
        y = None
        if v.get("y_axis") and v["y_axis"] != NO_AXIS:
            y = GridAxis.parse(v["y_axis"], v["y_values"])
        grid = GridConfig(config, x, y)
        progress(0, desc="Loading the model (first time only)")

        def show(p: GridProgress) -> None:
            step = f" · image {p.done + 1}: step {p.step}/{p.steps}" if p.steps else ""
            progress(p.fraction, desc=f"{p.done}/{p.total} images done{step}")

        with self.studio.cancellable(RUN_KIND) as cancel:
            result = self.studio.generate_grid(
                grid, subject=entry.subject if entry else None, progress=show, cancel=cancel)
        rows, cols = grid.shape
        axes = f"X = {x.label} {x.text}" + (f"; Y = {y.label} {y.text}" if y else "")
        if result.status != "completed":
            text = (f"⏹️ Stopped after {result.done} of {result.total} images; the partial "
                    "grid is shown but not saved.")
            return [(result.image, "partial grid")], text
        text = (f"Grid of {result.total} images ({cols} × {rows}): {axes}. Seed "
                f"{config.seed}, {_settings_text(config, v['lora'])}, {result.seconds:.1f} s. "
                f"Saved as `{result.path.name}` with its settings and axes.")
        return [(str(result.path), "grid")], text

    def stop(self) -> str:
        """Stop the running generation or grid within one sampler step."""
        if self.studio.stop(RUN_KIND):
            return "Stopping after the current step…"
        return "Nothing is being generated, so there is nothing to stop."

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

    # ---- History ----------------------------------------------------------------------------
    def _history_items(self, label: str | None) -> list[HistoryItem]:
        entry = self.studio.find_lora(label) if label and label != BASE_MODEL else None
        if entry is None and label and label != BASE_MODEL:
            return []
        return self.studio.history(entry.subject if entry else None)

    def history(self, lora: str | None) -> list[dict]:
        """Earlier images of the picked LoRA's subject (newest first): file name, caption
        and stored parameters."""
        return [{"file": item.path.name, "caption": item.caption(), "parameters": item.params}
                for item in self._history_items(lora)]

    def show_history(self, lora: str | None):
        items = self._history_items(lora)
        entry = self.studio.find_lora(lora) if lora and lora != BASE_MODEL else None
        whose = f"subject **{entry.subject}**" if entry else "the base model"
        note = (f"{len(items)} earlier image(s) of {whose}, newest first. Click one to put "
                "its settings back into the controls." if items
                else f"No images of {whose} yet: they appear here as you generate.")
        gallery = [(str(item.path), item.caption()) for item in items]
        return gallery, [item.path.name for item in items], note

    def history_settings(self, lora: str | None, file: str) -> dict:
        """The controls' values for one history image (by file name, as /history lists)."""
        item = next((i for i in self._history_items(lora) if i.path.name == file), None)
        if item is None:
            raise InputError(f"'{file}' is not among this subject's images; refresh the "
                             "history.")
        settings = settings_from(item.params)
        settings["lora"] = BASE_MODEL
        settings["lora_missing"] = False
        if settings["lora_dir"]:
            stored = Path(settings["lora_dir"]).resolve()
            entry = next((e for e in self.studio.loras() if e.path.resolve() == stored), None)
            settings["lora"] = entry.label if entry else None
            settings["lora_missing"] = entry is None
        settings["file"] = item.path.name
        settings["parameters_text"] = a1111_parameters(item.params)
        return settings

    @guarded(outputs=len(RESTORED) + 6, status=len(RESTORED) + 5)
    def pick_history(self, lora: str | None, files: list[str] | None, evt: gr.SelectData):
        """One click on a history image: its settings go back into the controls."""
        if not files or evt.index is None or not 0 <= evt.index < len(files):
            raise InputError("That image is no longer listed; refresh the history.")
        s = self.history_settings(lora, files[evt.index])
        values = [s[name] for name in RESTORED]
        lora_value = s["lora"] if s["lora"] else gr.skip()
        grid = s.get("grid") or {}
        x = grid.get("x") or {}
        y = grid.get("y") or {}
        axes = [x.get("axis") or gr.skip(), _values_text(x) or gr.skip(),
                (y.get("axis") or NO_AXIS) if grid else gr.skip(), _values_text(y) or gr.skip()]
        note = f"Settings of `{s['file']}` loaded into the controls"
        if s["lora_missing"]:
            note += " (its LoRA no longer exists, so the LoRA choice was kept)"
        note += f":\n```\n{s['parameters_text']}\n```"
        return (*values, lora_value, *axes, note)


def _values_text(axis: dict) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v)
                     for v in axis.get("values", []))


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
    w["sampler"] = gr.Dropdown(
        list(SAMPLER_NAMES), value=DEFAULT_SAMPLER, label="Sampler",
        info="The denoising method. Default = the model's own (PLMS for SD 1.5); "
             "DPM++ 2M Karras looks good in 20-30 steps. Switching reloads nothing.",
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


def _grid_controls() -> dict[str, gr.components.Component]:
    w: dict[str, gr.components.Component] = {}
    gr.Markdown(
        "Compare settings side by side: every picture uses the same seed and the settings "
        "above, except the two you vary here. The model loads once for the whole grid."
    )
    with gr.Row():
        w["x_axis"] = gr.Dropdown(
            AXIS_CHOICES, value="unet_scale", label="X axis (columns)", scale=1,
            info="The setting that changes from column to column.",
        )
        w["x_values"] = gr.Textbox(
            "0, 0.5, 1, 1.5", label="X values", scale=2, info=VALUES_INFO,
        )
    with gr.Row():
        w["y_axis"] = gr.Dropdown(
            [("(none: one row)", NO_AXIS)] + AXIS_CHOICES, value="text_encoder_scale",
            label="Y axis (rows)", scale=1,
            info="The setting that changes from row to row, or none.",
        )
        w["y_values"] = gr.Textbox(
            "0, 0.5, 1", label="Y values", scale=2,
            info="Same syntax as the X values; ignored when the Y axis is none.",
        )
    return w


def build_generate_tab(studio: Studio) -> GenerateTab:
    handlers = GenerateHandlers(studio)
    gr.Markdown(
        "Draw pictures with your subject. Sliders take effect on the next click of "
        "**Generate**; changing them reloads nothing, so trying strengths is quick. "
        "To compare strengths side by side, open **X/Y grid**."
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
            with gr.Row():
                generate_btn = gr.Button("Generate", variant="primary", scale=2)
                stop_btn = gr.Button("Stop", variant="stop", scale=1)
            with gr.Accordion("X/Y grid: compare settings side by side", open=False):
                grid_settings = _grid_controls()
                grid_btn = gr.Button("Make grid", variant="secondary")
        with gr.Column(scale=1, min_width=340):
            gallery = gr.Gallery(label="Generated images", columns=2, height=520,
                                 object_fit="contain", format="png")
            caption = gr.Markdown()
            with gr.Accordion("History of this subject", open=True):
                first = handlers.show_history(current)
                history_note = gr.Markdown(first[2])
                history = gr.Gallery(
                    first[0], label="Earlier images (click one to reuse its settings)",
                    columns=4, height=260, object_fit="contain", allow_preview=False,
                )
                history_files = gr.State(first[1])
                history_refresh = gr.Button("↻ Refresh history", size="sm")

    known = gr.State(lora_choices(studio))
    quiet = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}
    history_outputs = [history, history_files, history_note]
    refresh.click(handlers.refresh, [lora, known], [lora, known], api_visibility="private",
                  queue=False)
    lora.change(handlers.describe, [lora, settings["prompt"]], [about, settings["prompt"]],
                api_visibility="private", queue=False)
    lora.change(handlers.show_history, lora, history_outputs, **quiet)
    history_refresh.click(handlers.show_history, lora, history_outputs, **quiet)
    # One queue for everything that runs the model, so a grid waits for a generation.
    run = {"concurrency_id": "generator", "concurrency_limit": 1, "show_progress_on": gallery}
    generate_btn.click(handlers.generate, inputs_kwargs={"lora": lora, **settings},
                       outputs=[gallery, caption], api_name="generate", **run
                       ).then(handlers.show_history, lora, history_outputs, **quiet)
    grid_btn.click(handlers.grid, inputs_kwargs={"lora": lora, **settings, **grid_settings},
                   outputs=[gallery, caption], api_name="grid", **run
                   ).then(handlers.show_history, lora, history_outputs, **quiet
                   # A grid is one wide picture: show it in the large preview, not as a
                   # thumbnail (a separate step, so /grid's API answer stays a plain list).
                   ).then(lambda: gr.Gallery(selected_index=0), None, gallery, **quiet)
    # Not queued: it must run while a generation holds the queue.
    stop_btn.click(handlers.stop, None, caption, api_name="stop_generation", queue=False)
    restored = [settings[name] for name in RESTORED]
    history.select(
        handlers.pick_history, [lora, history_files],
        [*restored, lora, grid_settings["x_axis"], grid_settings["x_values"],
         grid_settings["y_axis"], grid_settings["y_values"], history_note],
        api_visibility="private", queue=False,
    )
    gr.api(handlers.list_loras, api_name="list_loras")
    gr.api(handlers.history, api_name="history")
    gr.api(handlers.history_settings, api_name="history_settings")
    return GenerateTab(lora=lora, known=known, refresh_loras=handlers.refresh,
                       load_loras=handlers.load, history_outputs=history_outputs,
                       refresh_history=handlers.show_history)
