"""Helpers shared by the tabs: error display, defaults, formatting, model facts."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import operator
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from ..errors import DreamStudioError

if TYPE_CHECKING:
    from ..studio import Studio

log = logging.getLogger(__name__)

SD15_SIZE = 512


def guarded(message: str | Callable) -> Callable[[Callable], Callable]:
    """Decorate a handler method so the user sees messages, never tracebacks.

    A DreamStudioError (a message written for the user) becomes a warning toast and the
    text of the message widget among the handler's widgets (`self.ui`): the one `message`
    names ("caption"), or the one it picks (lambda ui: ui.form["class_summary"]). The
    event's other outputs stay as they were. Any other exception is logged with its
    traceback and shown as a short gr.Error. A generator handler (one that streams its
    updates) is guarded the same way, its message being its last update.
    """
    widget = message if callable(message) else operator.attrgetter(message)

    def decorate(fn: Callable) -> Callable:
        def failed(self, exc: Exception) -> dict:
            """The update showing `exc`, called inside the handler's except clause."""
            if isinstance(exc, gr.Error):
                raise exc
            if not isinstance(exc, DreamStudioError):
                log.exception("%s failed", fn.__name__)
                raise gr.Error(short_error(exc)) from None
            gr.Warning(str(exc))
            return {widget(self.ui): f"⚠️ {exc}"}

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def streaming(self, *args, **kwargs):
                try:
                    yield from fn(self, *args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - failed() re-raises what it does not show
                    yield failed(self, exc)

            return streaming

        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - failed() re-raises what it does not show
                return failed(self, exc)

        return wrapper

    return decorate


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 200:
        text = text[:197] + "..."
    return (f"Something went wrong ({type(exc).__name__}: {text}). "
            "The details are in the terminal that runs the app.")


def duration(seconds: float | None) -> str:
    """'1 h 02 min', '3 min 05 s', '12 s'."""
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def model_image_size(model: str, fallback: int = SD15_SIZE) -> int:
    """The native image side of a local diffusers folder (UNet sample size x VAE scale).

    Hub ids and single files are not opened at startup (that would load or download
    them); they get `fallback`, their family's size (SD 1.5's 512, SDXL's 1024).
    """
    folder = Path(model).expanduser()
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
        sample = unet["sample_size"]
        sample = sample[0] if isinstance(sample, list | tuple) else sample
        scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
        return int(sample) * scale
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return fallback


def subject_choices(studio: Studio) -> list[str]:
    return studio.subjects()


def prepared_subjects(studio: Studio) -> list[str]:
    """Subjects whose photos are prepared, i.e. ready to train on."""
    return [s for s in studio.subjects() if studio.has_photos(s)]
