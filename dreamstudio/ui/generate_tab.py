"""Generate tab: pictures from the base model plus (optionally) a trained subject LoRA.

Also X/Y grids (compare LoRA strengths, guidance, steps, seeds or samplers side by side),
a Stop button for both, and the subject's history: earlier images whose settings one
click puts back into the controls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from ..config import GenerateConfig, default_of
from ..errors import InputError
from ..studio import (
    NO_AXIS,
    GridAxis,
    GridConfig,
    GridProgress,
    HistoryItem,
    LoraEntry,
    StepClock,
    Studio,
    a1111_parameters,
    settings_from,
)
from . import generate_text as text
from . import loras
from .common import guarded
from .generate_widgets import GenerateWidgets, build_widgets
from .loras import BASE_MODEL
from .streaming import UpdateStream

RUN_KIND = "generate"  # the Studio's stop flag shared by Generate and Make grid
# Controls a history click fills (GenerateConfig names; the LoRA and grid axes besides).
RESTORED = ("prompt", "negative_prompt", "unet_scale", "text_encoder_scale", "guidance",
            "steps", "seed", "height", "width", "sampler", "precision")


@dataclass
class GenerateTab:
    lora: gr.Dropdown
    known: gr.State  # the labels the page has already seen, to spot new LoRAs
    refresh_loras: Callable  # (current, known) -> {lora: dropdown update, known: labels}
    load_loras: Callable  # () -> the same, for a freshly opened page
    history_outputs: list  # what refresh_history fills
    refresh_history: Callable  # (lora label) -> {history gallery, file names, note}
    settings: dict  # the controls by GenerateConfig name (the Tune tab fills some)


def lora_choices(studio: Studio) -> list[str]:
    return [BASE_MODEL, *loras.lora_labels(studio)]


def history_items(studio: Studio, label: str | None) -> list[HistoryItem]:
    """Earlier images of the subject of LoRA `label` (the base model's for BASE_MODEL);
    none for a LoRA that no longer exists."""
    entry = studio.find_lora(label) if label and label != BASE_MODEL else None
    if entry is None and label and label != BASE_MODEL:
        return []
    return studio.history(entry.subject if entry else None)


def history_view(studio: Studio, label: str | None) -> tuple[list, list[str], str]:
    """(gallery items, their file names, the note) of the history of LoRA `label`."""
    items = history_items(studio, label)
    entry = studio.find_lora(label) if label and label != BASE_MODEL else None
    note = text.history_note(len(items), entry.subject if entry else None)
    return ([(str(item.path), item.caption()) for item in items],
            [item.path.name for item in items], note)


class GenerateHandlers:
    def __init__(self, studio: Studio, ui: GenerateWidgets):
        self.studio = studio
        self.ui = ui

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
            sampler=v.get("sampler") or default_of(GenerateConfig, "sampler"),
            precision=v.get("precision") or default_of(GenerateConfig, "precision"),
            preview_every=int(v.get("preview_every", default_of(GenerateConfig,
                                                                  "preview_every"))),
            preview_decoder=self.studio.preview_decoder,
        )
        return config, entry

    def _preview(self, stream: UpdateStream, what: str) -> Callable:
        """The preview callback: the pictures forming go to the gallery."""
        def show(pictures, step: int, steps: int) -> None:
            stream.put({self.ui.gallery: [(p, f"{what}: step {step}/{steps}")
                                          for p in pictures]})
        return show

    @guarded("caption")
    def generate(self, **v):
        """Generate images, streaming the pictures forming and the progress; ends with
        (gallery of saved PNGs, caption with the settings)."""
        config, entry = self._config(v)
        ui, stream, clock = self.ui, UpdateStream(), StepClock(config.steps)
        yield {ui.caption: "Loading the model (first time only)…"}
        started = time.monotonic()
        n = config.num_images

        def progress(step: int, steps: int) -> None:
            stream.put({ui.caption: text.draw_progress(step, steps, 1, n, n, clock.tick(step))})

        with self.studio.cancellable(RUN_KIND) as cancel:
            images = yield from stream.run(lambda: self.studio.generate(
                config, subject=entry.subject if entry else None, progress=progress,
                cancel=cancel, preview=self._preview(stream, "forming")), cancel)
            stopped = cancel.is_set()
        if stopped:
            yield {ui.caption: "⏹️ Stopped: the unfinished image(s) were not saved."}
            return
        seconds = time.monotonic() - started
        size = (images[0].image.width, images[0].image.height)
        yield {ui.gallery: [(str(im.path), f"seed {im.seed}") for im in images],
               ui.caption: text.caption(config, v["lora"], size, seconds)}

    @guarded("caption")
    def grid(self, **v):
        """Generate an X/Y grid, streaming each cell forming and the progress; ends with
        (gallery with the grid image, caption)."""
        config, entry = self._config(v)
        x = GridAxis.parse(v["x_axis"], v["x_values"])
        y = None
        if v.get("y_axis") and v["y_axis"] != NO_AXIS:
            y = GridAxis.parse(v["y_axis"], v["y_values"])
        grid = GridConfig(config, x, y)
        ui, stream = self.ui, UpdateStream()
        yield {ui.caption: "Loading the model (first time only)…"}

        def show(p: GridProgress) -> None:
            stream.put({ui.caption: text.grid_progress(p)})

        with self.studio.cancellable(RUN_KIND) as cancel:
            result = yield from stream.run(lambda: self.studio.generate_grid(
                grid, subject=entry.subject if entry else None, progress=show,
                cancel=cancel, preview=self._preview(stream, "cell forming")), cancel)
        done = result.status == "completed"
        image = (str(result.path), "grid") if done else (result.image, "partial grid")
        yield {ui.gallery: [image], ui.caption: text.grid_caption(grid, v["lora"], result)}

    def stop(self):
        """Stop the running generation or grid within one sampler step."""
        if self.studio.stop(RUN_KIND):
            return {self.ui.caption: "Stopping after the current step…"}
        return {self.ui.caption: "Nothing is being generated, so there is nothing to stop."}

    def refresh(self, current: str | None, known: list[str] | None):
        """Fresh choices; a LoRA that appeared since the page last looked gets selected."""
        choices = lora_choices(self.studio)
        new = [c for c in choices if known is not None and c not in known]
        newest = loras.newest_label(self.studio)
        if new:
            value = newest if newest in new else new[-1]
        else:
            value = current if current in choices else newest
        return {self.ui.lora: gr.update(choices=choices, value=value), self.ui.known: choices}

    def load(self):
        choices = lora_choices(self.studio)
        return {self.ui.lora: gr.update(choices=choices, value=loras.newest_label(self.studio)),
                self.ui.known: choices}

    def describe(self, label: str | None, prompt: str):
        """Show what the picked LoRA was trained on; suggest its prompt if none is typed."""
        about = self.ui.about
        entry = self.studio.find_lora(label) if label and label != BASE_MODEL else None
        if entry is None and label and label != BASE_MODEL:
            return {about: "This LoRA no longer exists: press ↻."}
        update = {about: loras.describe(self.studio, entry)}
        if entry is not None and not (prompt or "").strip():
            suggestion = entry.facts.instance_prompt
            if suggestion:
                update[self.ui.settings["prompt"]] = suggestion
        return update

    def list_loras(self) -> list[str]:
        """Labels of the trained LoRAs ('subject / run'), the base-model entry first."""
        return lora_choices(self.studio)

    # ---- History ----------------------------------------------------------------------------
    def _history_items(self, label: str | None) -> list[HistoryItem]:
        return history_items(self.studio, label)

    def history(self, lora: str | None) -> list[dict]:
        """Earlier images of the picked LoRA's subject (newest first): file name, caption
        and stored parameters."""
        return [{"file": item.path.name, "caption": item.caption(), "parameters": item.params}
                for item in self._history_items(lora)]

    def show_history(self, lora: str | None):
        gallery, files, note = history_view(self.studio, lora)
        ui = self.ui
        return {ui.history: gallery, ui.history_files: files, ui.history_note: note}

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
            entry = self.studio.lora_at(settings["lora_dir"])
            settings["lora"] = entry.label if entry else None
            settings["lora_missing"] = entry is None
        settings["file"] = item.path.name
        settings["parameters_text"] = a1111_parameters(item.params)
        return settings

    @guarded("history_note")
    def pick_history(self, lora: str | None, files: list[str] | None, evt: gr.SelectData):
        """One click on a history image: its settings go back into the controls."""
        if not files or evt.index is None or not 0 <= evt.index < len(files):
            raise InputError("That image is no longer listed; refresh the history.")
        s = self.history_settings(lora, files[evt.index])
        ui = self.ui
        update = {ui.settings[name]: s[name] for name in RESTORED}
        if s["lora"]:
            update[ui.lora] = s["lora"]
        grid = s.get("grid") or {}
        x, y = grid.get("x") or {}, grid.get("y") or {}
        axes = {"x_axis": x.get("axis"), "x_values": text.values_text(x),
                "y_axis": (y.get("axis") or NO_AXIS) if grid else None,
                "y_values": text.values_text(y)}
        update.update({ui.grid[name]: value for name, value in axes.items() if value})
        update[ui.history_note] = text.restored_note(s["file"], s["lora_missing"],
                                                     s["parameters_text"])
        return update


def build_generate_tab(studio: Studio) -> GenerateTab:
    # The widgets show the page's first state: the newest LoRA and its subject's history.
    current = loras.newest_label(studio)
    ui = build_widgets(studio, lora_choices(studio), current,
                       loras.describe(studio, studio.find_lora(current)),
                       history_view(studio, current))
    handlers = GenerateHandlers(studio, ui)
    _wire(handlers, ui)
    return GenerateTab(lora=ui.lora, known=ui.known, refresh_loras=handlers.refresh,
                       load_loras=handlers.load, history_outputs=ui.history_outputs,
                       refresh_history=handlers.show_history, settings=ui.settings)


def _wire(handlers: GenerateHandlers, ui: GenerateWidgets) -> None:
    quiet = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}
    lora, settings, grid, gallery = ui.lora, ui.settings, ui.grid, ui.gallery
    ui.refresh.click(handlers.refresh, [lora, ui.known], [lora, ui.known],
                     api_visibility="private", queue=False)
    lora.change(handlers.describe, [lora, settings["prompt"]], [ui.about, settings["prompt"]],
                api_visibility="private", queue=False)
    lora.change(handlers.show_history, lora, ui.history_outputs, **quiet)
    ui.history_refresh.click(handlers.show_history, lora, ui.history_outputs, **quiet)
    # One queue for everything that runs the model, so a grid waits for a generation.
    # The handlers stream the picture forming into the gallery and the progress into the
    # caption: a full progress overlay would hide both.
    run = {"concurrency_id": "generator", "concurrency_limit": 1, "show_progress": "minimal",
           "show_progress_on": gallery}
    ui.generate_btn.click(handlers.generate, inputs_kwargs={"lora": lora, **settings},
                          outputs=[gallery, ui.caption], api_name="generate", **run
                          ).then(handlers.show_history, lora, ui.history_outputs, **quiet)
    ui.grid_btn.click(handlers.grid, inputs_kwargs={"lora": lora, **settings, **grid},
                      outputs=[gallery, ui.caption], api_name="grid", **run
                      ).then(handlers.show_history, lora, ui.history_outputs, **quiet
                      # A grid is one wide picture: show it in the large preview, not as a
                      # thumbnail (a separate step, so /grid's API answer stays a plain list).
                      ).then(lambda: gr.Gallery(selected_index=0), None, gallery, **quiet)
    # Not queued: it must run while a generation holds the queue.
    ui.stop_btn.click(handlers.stop, None, ui.caption, api_name="stop_generation", queue=False)
    ui.history.select(
        handlers.pick_history, [lora, ui.history_files],
        [*(settings[name] for name in RESTORED), lora, grid["x_axis"], grid["x_values"],
         grid["y_axis"], grid["y_values"], ui.history_note],
        api_visibility="private", queue=False,
    )
    gr.api(handlers.list_loras, api_name="list_loras")
    gr.api(handlers.history, api_name="history")
    gr.api(handlers.history_settings, api_name="history_settings")
