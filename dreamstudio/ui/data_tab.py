"""Data tab: upload a subject's photos and turn them into square training crops."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from ..errors import DreamStudioError
from ..prepare import PrepareConfig, PrepareReport
from ..studio import Studio
from .common import guarded, subject_choices

REJECTED_HEADERS = ["Photo", "Why it was not used"]
MODE_CHOICES = [
    ("Person: crop around the face", "face"),
    ("Object or pet: centre square", "object"),
]


@dataclass
class DataTab:
    subject: gr.Dropdown
    prepare_event: gr.events.Dependency
    refresh_subjects: Callable  # current name -> dropdown update with fresh choices


def _rejected_table(report: PrepareReport | None) -> pd.DataFrame:
    rows = [[r.source, r.reason or "unknown"] for r in report.rejected] if report else []
    return pd.DataFrame(rows, columns=REJECTED_HEADERS)


def _gallery(report: PrepareReport) -> list[tuple[str, str]]:
    items = []
    for result, path in zip(report.kept, report.kept_paths, strict=True):
        caption = result.source
        if result.face_prob is not None:
            caption += f" (face {result.face_prob:.2f})"
        items.append((str(path), caption))
    return items


def _summary(subject: str, report: PrepareReport) -> str:
    kept, rejected = len(report.kept), len(report.rejected)
    cfg = report.config
    line = (f"**{subject}**: {kept} photo{'s' if kept != 1 else ''} kept, {rejected} not used "
            f"({cfg.mode} mode, {cfg.size} px).")
    if not report.complete:
        line += " The last preparation did not finish: press Prepare again."
    elif kept < 3:
        line += " DreamBooth needs at least 3 good photos: add more and press Prepare again."
    else:
        line += " Ready to train: go to the **Train** tab."
    return line


class DataHandlers:
    def __init__(self, studio: Studio):
        self.studio = studio

    @guarded(outputs=5)
    def prepare(self, subject: str, files: list[str] | None, mode: str, size: float,
                face_margin: float, progress=gr.Progress()):  # noqa: B008 - Gradio idiom
        """Add the uploaded photos to the subject and (re)crop all its photos."""
        config = PrepareConfig(mode=mode, size=round(size), face_margin=float(face_margin))
        subject = (subject or "").strip()

        def report_progress(done: int, total: int, message: str) -> None:
            progress((done, total), desc=message)

        report = self.studio.prepare(subject, [Path(f) for f in files or []], config,
                                     progress=report_progress)
        choices = subject_choices(self.studio)
        return (_summary(subject, report), _gallery(report), _rejected_table(report),
                None, gr.update(choices=choices, value=subject))

    def refresh(self, current: str | None):
        return gr.update(choices=subject_choices(self.studio), value=current)

    def show_subject(self, subject: str | None):
        """The current crops of an existing subject (or a hint for a new one), and the crop
        settings it was prepared with, so pressing Prepare again keeps them."""
        subject = (subject or "").strip()
        keep = (gr.skip(), gr.skip(), gr.skip())
        if not subject:
            return ("Type a name for a new subject, or pick one you prepared before.", [],
                    _rejected_table(None), *keep)
        try:
            report = self.studio.photos(subject)
            originals = self.studio.workspace.originals_dir(subject)
        except DreamStudioError as exc:
            return (f"⚠️ {exc}", [], _rejected_table(None), *keep)
        if report is None:
            count = len(list(originals.iterdir())) if originals.is_dir() else 0
            if count:
                hint = f"**{subject}** has {count} uploaded photos, not prepared yet: press Prepare."
            else:
                hint = f"New subject **{subject}**: upload 3-20 photos and press Prepare."
            return (hint, [], _rejected_table(None), *keep)
        cfg = report.config
        return (_summary(subject, report), _gallery(report), _rejected_table(report),
                cfg.mode, cfg.size, cfg.face_margin)


def build_data_tab(studio: Studio) -> DataTab:
    handlers = DataHandlers(studio)
    gr.Markdown(
        "Upload 3-20 photos of **one** subject: different angles, light and backgrounds, "
        "nothing else prominent in the picture. New photos are added to the subject's earlier "
        "ones; each becomes a square training image, and photos that cannot be used are "
        "listed with the reason."
    )
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            subject = gr.Dropdown(
                choices=subject_choices(studio), value=None, allow_custom_value=True,
                label="Subject name",
                info="Type a new name (e.g. 'my-dog') or pick a subject you prepared before.",
            )
            files = gr.File(
                label="Photos to add",
                file_count="multiple", file_types=["image"], height=160,
            )
            mode = gr.Radio(
                MODE_CHOICES, value="face", label="Crop mode",
                info="Person: finds the face and frames head and shoulders. "
                     "Object or pet: keeps the largest square in the middle of each photo.",
            )
            size = gr.Slider(
                64, 1024, value=512, step=64, label="Image size (pixels)",
                info="Side of the square training images: 512 for SD 1.5, 768 for SD 2 (768).",
            )
            margin = gr.Slider(
                1.0, 4.0, value=2.2, step=0.1, label="Face margin",
                info="Crop size as a multiple of the face: 1 = face only, "
                     "2.2 = head and shoulders (recommended).",
            )
            prepare_btn = gr.Button("Prepare photos", variant="primary")
        with gr.Column(scale=3, min_width=320):
            summary = gr.Markdown("Type a name for a new subject, or pick one you prepared before.")
            gallery = gr.Gallery(
                label="Training images", columns=4, height=420, object_fit="contain",
                allow_preview=True,
            )
            rejected = gr.Dataframe(
                value=_rejected_table(None), headers=REJECTED_HEADERS, label="Photos not used",
                interactive=False, wrap=True,
            )

    mode.change(lambda m: gr.update(visible=m == "face"), mode, margin,
                api_visibility="private", queue=False)
    subject.change(handlers.show_subject, subject,
                   [summary, gallery, rejected, mode, size, margin],
                   api_name="subject_photos", show_progress="hidden")
    prepare_event = prepare_btn.click(
        handlers.prepare, [subject, files, mode, size, margin],
        [summary, gallery, rejected, files, subject], api_name="prepare",
    )
    return DataTab(subject=subject, prepare_event=prepare_event,
                   refresh_subjects=handlers.refresh)
