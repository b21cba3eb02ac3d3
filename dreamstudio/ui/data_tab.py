"""Data tab: upload a subject's photos, turn them into square training crops, review each
crop (warnings, leave out, caption, move the square, pick a face) and rename or delete the
subject."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..errors import DreamStudioError, InputError
from ..studio import PrepareConfig, PrepareReport, Studio
from . import data_text as text
from .common import guarded, subject_choices
from .data_widgets import DataWidgets, build_widgets


@dataclass
class DataTab:
    subject: gr.Dropdown
    prepare_event: gr.events.Dependency
    refresh_subjects: Callable  # current name -> dropdown update with fresh choices


def _need(photo: str | None) -> str:
    if not photo:
        raise InputError("Pick a photo first (in the list, or click it in the gallery).")
    return photo


class DataHandlers:
    def __init__(self, studio: Studio, ui: DataWidgets):
        self.studio = studio
        self.ui = ui

    def _subject_view(self, subject: str, report: PrepareReport) -> dict:
        ui = self.ui
        return {ui.summary: text.summary(subject, report), ui.gallery: text.gallery_items(report)}

    # ---- preparing ----------------------------------------------------------------------
    @guarded("summary")
    def prepare(self, subject: str, files: list[str] | None, mode: str, size: float,
                face_margin: float, progress=gr.Progress()):  # noqa: B008 - Gradio idiom
        """Add the uploaded photos to the subject and (re)crop all its photos."""
        config = PrepareConfig(mode=mode, size=round(size), face_margin=float(face_margin))
        subject = (subject or "").strip()

        def report_progress(done: int, total: int, message: str) -> None:
            progress((done, total), desc=message)

        report = self.studio.prepare(subject, [Path(f) for f in files or []], config,
                                     progress=report_progress)
        ui = self.ui
        return {**self._subject_view(subject, report), ui.rejected: text.rejected_table(report),
                ui.files: None,
                ui.subject: gr.update(choices=subject_choices(self.studio), value=subject)}

    def refresh(self, current: str | None):
        return {self.ui.subject: gr.update(choices=subject_choices(self.studio), value=current)}

    def show_subject(self, subject: str | None):
        """The current crops of an existing subject (or a hint for a new one), and the crop
        settings it was prepared with, so pressing Prepare again keeps them."""
        ui = self.ui
        subject = (subject or "").strip()
        empty = {ui.gallery: [], ui.rejected: text.rejected_table(None)}
        if not subject:
            return {ui.summary: text.NO_SUBJECT, **empty}
        try:
            report = self.studio.photos(subject)
            uploaded = self.studio.uploaded_count(subject) if report is None else 0
        except DreamStudioError as exc:
            return {ui.summary: f"⚠️ {exc}", **empty}
        if report is None:
            return {ui.summary: text.unprepared_hint(subject, uploaded), **empty}
        cfg = report.config
        return {**self._subject_view(subject, report), ui.rejected: text.rejected_table(report),
                ui.mode: cfg.mode, ui.size: cfg.size, ui.margin: cfg.face_margin}

    # ---- reviewing one photo ------------------------------------------------------------
    def _report(self, subject: str | None) -> PrepareReport | None:
        subject = (subject or "").strip()
        if not subject:
            return None
        try:
            return self.studio.photos(subject)
        except DreamStudioError:
            return None

    def photo_list(self, subject: str | None, current: str | None):
        """The photo picker's choices for `subject`, keeping the current photo if it is
        still there."""
        choices = text.photo_choices(self._report(subject))
        values = [value for _, value in choices]
        value = current if current in values else (values[0] if values else None)
        return {self.ui.photo: gr.update(choices=choices, value=value)}

    def pick_from_gallery(self, subject: str | None, evt: gr.SelectData):
        report = self._report(subject)
        if report is None or evt.index is None or not 0 <= evt.index < len(report.kept):
            return gr.skip()
        return {self.ui.photo: report.kept[evt.index].output}

    def _photo_view(self, subject: str, photo: str, report: PrepareReport) -> dict:
        ui = self.ui
        result = report.find(photo)
        preview = self.studio.photo_preview(subject, photo)
        x, y, side = text.crop_sliders(result)
        return {ui.photo_text: text.photo_text(report, result),
                ui.face: gr.update(**text.face_choices(result)), ui.x: gr.update(**x),
                ui.y: gr.update(**y), ui.side: gr.update(**side),
                ui.overview: preview.overview, ui.crop: preview.crop}

    def show_photo(self, subject: str | None, photo: str | None):
        """Everything the review panel shows for one photo."""
        ui = self.ui
        report = self._report(subject)
        if report is None or not photo:
            return {ui.photo_text: text.NO_PHOTO, ui.excluded: False, ui.held_out: False,
                    ui.caption: "",
                    ui.face: gr.update(choices=[], value=None, visible=False),
                    ui.overview: gr.update(value=None), ui.crop: gr.update(value=None)}
        try:
            view = self._photo_view(subject.strip(), photo, report)
        except DreamStudioError as exc:
            return {ui.photo_text: f"⚠️ {exc}", ui.overview: None, ui.crop: None}
        return {**view, ui.excluded: photo in report.excluded,
                ui.held_out: photo in report.held_out,
                ui.caption: report.find(photo).caption or ""}

    def preview(self, subject: str | None, photo: str | None, x: float, y: float, side: float):
        """The photo with the square at the slider values, before applying it."""
        if not photo:
            return gr.skip()
        try:
            preview = self.studio.photo_preview((subject or "").strip(), photo, (x, y, side))
        except DreamStudioError as exc:
            gr.Warning(str(exc))  # both outputs are images: the message goes in a toast
            return gr.skip()
        return {self.ui.overview: preview.overview, self.ui.crop: preview.crop}

    def _after_edit(self, subject: str, photo: str, report: PrepareReport) -> dict:
        ui = self.ui
        return {ui.photo_text: text.photo_text(report, report.find(photo)),
                **self._subject_view(subject, report),
                ui.photo: gr.update(choices=text.photo_choices(report), value=photo)}

    @guarded("photo_text")
    def exclude(self, subject: str, photo: str, excluded: bool):
        """Leave a photo out of training (excluded=True) or take it back in (False)."""
        subject = (subject or "").strip()
        report = self.studio.exclude_photo(subject, _need(photo), bool(excluded))
        return self._after_edit(subject, photo, report)

    @guarded("photo_text")
    def hold_out(self, subject: str, photo: str, held_out: bool):
        """Keep a photo for scoring only (held_out=True), never trained on, or train on it."""
        subject = (subject or "").strip()
        report = self.studio.hold_out_photo(subject, _need(photo), bool(held_out))
        return self._after_edit(subject, photo, report)

    @guarded("photo_text")
    def caption(self, subject: str, photo: str, caption: str | None):
        """Caption a photo for training (blank: it trains on the instance prompt)."""
        subject = (subject or "").strip()
        report = self.studio.set_caption(subject, _need(photo), caption)
        return {**self._after_edit(subject, photo, report),
                self.ui.caption: report.find(photo).caption or ""}

    def _after_crop(self, subject: str, photo: str, report: PrepareReport) -> dict:
        return {**self._after_edit(subject, photo, report),
                **self._photo_view(subject, photo, report)}

    @guarded("photo_text")
    def recrop(self, subject: str, photo: str, x: float, y: float, side: float):
        """Crop the square (x, y, side), in the original photo's pixels, from the original."""
        subject = (subject or "").strip()
        report = self.studio.recrop_photo(subject, _need(photo), x, y, side)
        return self._after_crop(subject, photo, report)

    @guarded("photo_text")
    def choose_face(self, subject: str, photo: str, face: float | None):
        """Crop around face number `face` (1 = the largest, as numbered on the photo)."""
        subject = (subject or "").strip()
        if face is None:
            raise InputError("Pick a face first (they are numbered on the photo).")
        report = self.studio.choose_face(subject, _need(photo), round(face) - 1)
        return self._after_crop(subject, photo, report)

    @guarded("photo_text")
    def reset_crop(self, subject: str, photo: str):
        """Back to the automatic crop (largest face, or the centre square)."""
        subject = (subject or "").strip()
        report = self.studio.reset_crop(subject, _need(photo))
        return self._after_crop(subject, photo, report)

    # ---- the subject as a whole ---------------------------------------------------------
    @guarded("subject_message")
    def rename(self, subject: str, new_name: str):
        """Rename the subject (photos, LoRAs and images move with it)."""
        subject = (subject or "").strip()
        if not subject:
            raise InputError("Pick the subject to rename first.")
        new = self.studio.rename_subject(subject, new_name or "")
        ui = self.ui
        return {ui.subject_message: f"Renamed **{subject}** to **{new}**.",
                ui.subject: gr.update(choices=subject_choices(self.studio), value=new),
                ui.new_name: ""}

    @guarded("subject_message")
    def delete(self, subject: str, confirm: bool):
        """Delete the subject and everything in it; needs confirm=True."""
        subject = (subject or "").strip()
        if not subject:
            raise InputError("Pick the subject to delete first.")
        if not confirm:
            raise InputError(
                f"Nothing deleted: tick 'Yes, delete' first to confirm that '{subject}' and "
                "all its photos, LoRAs and images should go."
            )
        self.studio.delete_subject(subject)
        ui = self.ui
        return {ui.subject_message: f"Deleted **{subject}**.",
                ui.subject: gr.update(choices=subject_choices(self.studio), value=None),
                ui.confirm: False}


def build_data_tab(studio: Studio) -> DataTab:
    ui = build_widgets(studio)
    handlers = DataHandlers(studio, ui)
    quiet = {"api_visibility": "private", "show_progress": "hidden"}
    subject, photo = ui.subject, ui.photo

    def then_show_photo(event: gr.events.Dependency) -> gr.events.Dependency:
        # Explicit chains rather than photo.change: a new subject may have a photo of the
        # same name, which would not count as a change.
        return (event.then(handlers.photo_list, [subject, photo], photo, **quiet)
                .then(handlers.show_photo, [subject, photo], ui.photo_view, **quiet))

    ui.mode.change(lambda m: gr.update(visible=m == "face"), ui.mode, ui.margin,
                   api_visibility="private", queue=False)
    then_show_photo(subject.change(handlers.show_subject, subject,
                                   [ui.summary, ui.gallery, ui.rejected, ui.mode, ui.size,
                                    ui.margin],
                                   api_name="subject_photos", show_progress="hidden"))
    prepare_event = ui.prepare_btn.click(
        handlers.prepare, [subject, ui.files, ui.mode, ui.size, ui.margin],
        [ui.summary, ui.gallery, ui.rejected, ui.files, subject], api_name="prepare",
    )
    then_show_photo(prepare_event)
    photo.input(handlers.show_photo, [subject, photo], ui.photo_view, **quiet)
    ui.gallery.select(handlers.pick_from_gallery, subject, photo, **quiet).then(
        handlers.show_photo, [subject, photo], ui.photo_view, **quiet)

    ui.excluded.input(
        handlers.exclude, [subject, photo, ui.excluded],
        [ui.photo_text, ui.summary, ui.gallery, photo], api_name="exclude_photo",
    )
    ui.held_out.input(
        handlers.hold_out, [subject, photo, ui.held_out],
        [ui.photo_text, ui.summary, ui.gallery, photo], api_name="hold_out_photo",
    )
    caption_io = ([subject, photo, ui.caption],
                  [ui.photo_text, ui.summary, ui.gallery, photo, ui.caption])
    ui.save_caption.click(handlers.caption, *caption_io, api_name="caption_photo")
    ui.caption.submit(handlers.caption, *caption_io, api_visibility="private")
    box = [subject, photo, ui.x, ui.y, ui.side]
    for slider in (ui.x, ui.y, ui.side):
        slider.release(handlers.preview, box, [ui.overview, ui.crop], **quiet)
    ui.apply.click(handlers.recrop, box, ui.after_crop, api_name="recrop_photo")
    ui.face.input(handlers.choose_face, [subject, photo, ui.face], ui.after_crop,
                  api_name="choose_face")
    ui.reset.click(handlers.reset_crop, [subject, photo], ui.after_crop, api_name="reset_crop")

    ui.rename_btn.click(handlers.rename, [subject, ui.new_name],
                        [ui.subject_message, subject, ui.new_name], api_name="rename_subject")
    ui.delete_btn.click(handlers.delete, [subject, ui.confirm],
                        [ui.subject_message, subject, ui.confirm], api_name="delete_subject")
    return DataTab(subject=subject, prepare_event=prepare_event,
                   refresh_subjects=handlers.refresh)
