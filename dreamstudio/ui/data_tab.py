"""Data tab: upload a subject's photos, turn them into square training crops, review each
crop (warnings, leave out, move the square, pick a face) and rename or delete the subject."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from ..config import PrepareConfig
from ..data.manifest import PhotoResult, PrepareReport
from ..errors import DreamStudioError, InputError
from ..studio import Studio
from .common import guarded, subject_choices

REJECTED_HEADERS = ["Photo", "Why it was not used"]
MODE_CHOICES = [
    ("Person: crop around the face", "face"),
    ("Object or pet: centre square", "object"),
]
# The crop sliders' server-side limit; each photo sets the real one (its width/height).
SLIDER_LIMIT = 100_000
NO_PHOTO = "Prepare photos first; then pick one here (or click it in the gallery) to review it."


@dataclass
class DataTab:
    subject: gr.Dropdown
    prepare_event: gr.events.Dependency
    refresh_subjects: Callable  # current name -> dropdown update with fresh choices


def _rejected_table(report: PrepareReport | None) -> pd.DataFrame:
    rows = [[r.source, r.reason or "unknown"] for r in report.rejected] if report else []
    return pd.DataFrame(rows, columns=REJECTED_HEADERS)


def _label(number: int, result: PhotoResult, excluded: bool) -> str:
    label = f"{number}. {result.source}"
    if result.warnings:
        label += " ⚠️"
    if excluded:
        label += " (left out)"
    return label


def _gallery(report: PrepareReport) -> list[tuple[str, str]]:
    excluded = set(report.excluded)
    return [(str(path), _label(n, r, r.output in excluded))
            for n, (r, path) in enumerate(zip(report.kept, report.kept_paths, strict=True), 1)]


def _photo_choices(report: PrepareReport | None) -> list[tuple[str, str]]:
    if report is None:
        return []
    excluded = set(report.excluded)
    return [(_label(n, r, r.output in excluded), r.output) for n, r in enumerate(report.kept, 1)]


def _summary(subject: str, report: PrepareReport) -> str:
    kept, rejected = len(report.kept), len(report.rejected)
    used, left_out = len(report.used), len(report.excluded)
    cfg = report.config
    line = (f"**{subject}**: {kept} photo{'s' if kept != 1 else ''} kept, {rejected} not used "
            f"({cfg.mode} mode, {cfg.size} px).")
    if left_out:
        line += f" You left {left_out} out of training, so {used} will be used."
    if not report.complete:
        line += " The last preparation did not finish: press Prepare again."
    elif used < 3:
        line += " DreamBooth needs at least 3 good photos: add more and press Prepare again."
    else:
        line += " Ready to train: go to the **Train** tab."
    # The "at least 3" advice above already covers the photo-count warning.
    notes = [w for w in report.warnings if not w.startswith("Only ")] if used < 3 else (
        report.warnings)
    return line + "".join(f"\n\n⚠️ {note}" for note in notes)


def _photo_text(report: PrepareReport, result: PhotoResult) -> str:
    # image_size is missing in manifests written before the review existed.
    size = "{}×{} px, ".format(*result.image_size) if result.image_size else ""
    x0, y0, x1, _ = result.crop_box or (0, 0, 0, 0)
    how = ("set by hand" if result.manual_crop
           else f"around face {result.face_index + 1}" if result.face_index is not None
           else "centre square")
    lines = [f"**{result.source}**: {size}crop {x1 - x0} px at ({x0}, {y0}), {how}."]
    if result.output in report.excluded:
        lines.append("Left out of training.")
    lines += [f"⚠️ {w}" for w in result.warnings] or ["No warnings."]
    return "\n\n".join(lines)


def _face_update(result: PhotoResult):
    faces = result.faces or []
    choices = [(f"Face {n}" + (" (largest)" if n == 1 else ""), n)
               for n in range(1, len(faces) + 1)]
    value = result.face_index + 1 if result.face_index is not None else None
    return gr.update(choices=choices, value=value, visible=len(faces) > 1)


def _crop_updates(result: PhotoResult) -> tuple:
    """x, y and side sliders set to the crop, with the photo's own limits."""
    width, height = result.image_size or (SLIDER_LIMIT, SLIDER_LIMIT)
    x0, y0, x1, _ = result.crop_box or (0, 0, min(width, height), 0)
    return (gr.update(value=x0, maximum=width), gr.update(value=y0, maximum=height),
            gr.update(value=x1 - x0, maximum=min(width, height)))


class DataHandlers:
    def __init__(self, studio: Studio):
        self.studio = studio

    # ---- preparing ----------------------------------------------------------------------
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
        choices = _photo_choices(self._report(subject))
        values = [value for _, value in choices]
        value = current if current in values else (values[0] if values else None)
        return gr.update(choices=choices, value=value)

    def pick_from_gallery(self, subject: str | None, evt: gr.SelectData):
        report = self._report(subject)
        if report is None or evt.index is None or not 0 <= evt.index < len(report.kept):
            return gr.skip()
        return report.kept[evt.index].output

    def show_photo(self, subject: str | None, photo: str | None):
        """Everything the review panel shows for one photo."""
        report = self._report(subject)
        if report is None or not photo:
            none = gr.update(value=None)
            return (NO_PHOTO, False, gr.update(choices=[], value=None, visible=False),
                    gr.skip(), gr.skip(), gr.skip(), none, none)
        try:
            result = report.find(photo)
            preview = self.studio.photo_preview(subject.strip(), photo)
        except DreamStudioError as exc:
            return (f"⚠️ {exc}", gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                    None, None)
        return (_photo_text(report, result), result.output in report.excluded,
                _face_update(result), *_crop_updates(result), preview.overview, preview.crop)

    def preview(self, subject: str | None, photo: str | None, x: float, y: float, side: float):
        """The photo with the square at the slider values, before applying it."""
        if not photo:
            return gr.skip(), gr.skip()
        try:
            preview = self.studio.photo_preview((subject or "").strip(), photo, (x, y, side))
        except DreamStudioError as exc:
            gr.Warning(str(exc))  # both outputs are images: the message goes in a toast
            return gr.skip(), gr.skip()
        return preview.overview, preview.crop

    @guarded(outputs=4)
    def exclude(self, subject: str, photo: str, excluded: bool):
        """Leave a photo out of training (excluded=True) or take it back in (False)."""
        subject = (subject or "").strip()
        report = self.studio.exclude_photo(subject, _need(photo), bool(excluded))
        result = report.find(photo)
        return (_photo_text(report, result), _summary(subject, report), _gallery(report),
                gr.update(choices=_photo_choices(report), value=photo))

    def _after_crop(self, subject: str, photo: str, report: PrepareReport) -> tuple:
        result = report.find(photo)
        preview = self.studio.photo_preview(subject, photo)
        return (_photo_text(report, result), _summary(subject, report), _gallery(report),
                gr.update(choices=_photo_choices(report), value=photo), _face_update(result),
                *_crop_updates(result), preview.overview, preview.crop)

    @guarded(outputs=10)
    def recrop(self, subject: str, photo: str, x: float, y: float, side: float):
        """Crop the square (x, y, side), in the original photo's pixels, from the original."""
        subject = (subject or "").strip()
        report = self.studio.recrop_photo(subject, _need(photo), x, y, side)
        return self._after_crop(subject, photo, report)

    @guarded(outputs=10)
    def choose_face(self, subject: str, photo: str, face: float | None):
        """Crop around face number `face` (1 = the largest, as numbered on the photo)."""
        subject = (subject or "").strip()
        if face is None:
            raise InputError("Pick a face first (they are numbered on the photo).")
        report = self.studio.choose_face(subject, _need(photo), round(face) - 1)
        return self._after_crop(subject, photo, report)

    @guarded(outputs=10)
    def reset_crop(self, subject: str, photo: str):
        """Back to the automatic crop (largest face, or the centre square)."""
        subject = (subject or "").strip()
        report = self.studio.reset_crop(subject, _need(photo))
        return self._after_crop(subject, photo, report)

    # ---- the subject as a whole ---------------------------------------------------------
    @guarded(outputs=3)
    def rename(self, subject: str, new_name: str):
        """Rename the subject (photos, LoRAs and images move with it)."""
        subject = (subject or "").strip()
        if not subject:
            raise InputError("Pick the subject to rename first.")
        new = self.studio.rename_subject(subject, new_name or "")
        return (f"Renamed **{subject}** to **{new}**.",
                gr.update(choices=subject_choices(self.studio), value=new), "")

    @guarded(outputs=3)
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
        return (f"Deleted **{subject}**.",
                gr.update(choices=subject_choices(self.studio), value=None), False)


def _need(photo: str | None) -> str:
    if not photo:
        raise InputError("Pick a photo first (in the list, or click it in the gallery).")
    return photo


def _review_panel() -> dict[str, gr.components.Component]:
    w: dict[str, gr.components.Component] = {}
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            w["photo"] = gr.Dropdown(
                [], value=None, label="Photo to review", allow_custom_value=True,
                info="Pick a training image (or click it in the gallery) to see its warnings, "
                     "leave it out or change its crop.",
            )
            w["text"] = gr.Markdown(NO_PHOTO)
            w["excluded"] = gr.Checkbox(
                False, label="Leave this photo out of training",
                info="The photo stays here and can be taken back in by unticking this.",
            )
            w["face"] = gr.Dropdown(
                [], value=None, label="Face to crop around", visible=False,
                allow_custom_value=True,
                info="Several faces were found (numbered in blue on the photo): "
                     "pick your subject's.",
            )
            w["x"] = gr.Slider(
                0, SLIDER_LIMIT, value=0, step=1, label="Crop left edge (x)",
                info="Pixels from the left edge of the original photo.",
            )
            w["y"] = gr.Slider(
                0, SLIDER_LIMIT, value=0, step=1, label="Crop top edge (y)",
                info="Pixels from the top edge of the original photo.",
            )
            w["side"] = gr.Slider(
                8, SLIDER_LIMIT, value=512, step=1, label="Crop size",
                info="Side of the square in the original photo's pixels. Below half the "
                     "image size the crop is enlarged and looks soft.",
            )
            with gr.Row():
                w["apply"] = gr.Button("Apply this crop", variant="primary")
                w["reset"] = gr.Button("Automatic crop")
        with gr.Column(scale=3, min_width=320), gr.Row():
            w["overview"] = gr.Image(
                label="Whole photo, crop in yellow", type="pil",
                interactive=False, height=320,
            )
            w["crop"] = gr.Image(label="Crop as training sees it", type="pil",
                                 interactive=False, height=320)
    return w


def build_data_tab(studio: Studio) -> DataTab:
    handlers = DataHandlers(studio)
    gr.Markdown(
        "Upload 3-20 photos of **one** subject: different angles, light and backgrounds, "
        "nothing else prominent in the picture. New photos are added to the subject's earlier "
        "ones; each becomes a square training image, and photos that cannot be used are "
        "listed with the reason. Then review the crops below: warnings point at blurry, "
        "small or near-duplicate photos."
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
            with gr.Accordion("Rename or delete this subject", open=False):
                new_name = gr.Textbox(
                    label="New name", placeholder="e.g. rex",
                    info="Its photos, LoRAs and generated images move with it.",
                )
                rename_btn = gr.Button("Rename subject")
                confirm = gr.Checkbox(
                    False, label="Yes, delete this subject",
                    info="Deletes its photos, crops, LoRAs and generated images for good. "
                         "Class images shared with other subjects stay.",
                )
                delete_btn = gr.Button("Delete subject", variant="stop")
                subject_message = gr.Markdown()
        with gr.Column(scale=3, min_width=320):
            summary = gr.Markdown("Type a name for a new subject, or pick one you prepared before.")
            gallery = gr.Gallery(
                label="Training images (click one to review it)", columns=4, height=420,
                object_fit="contain", allow_preview=False,
            )
            rejected = gr.Dataframe(
                value=_rejected_table(None), headers=REJECTED_HEADERS, label="Photos not used",
                interactive=False, wrap=True,
            )
    with gr.Accordion("Review a photo", open=True):
        review = _review_panel()

    quiet = {"api_visibility": "private", "show_progress": "hidden"}
    photo = review["photo"]
    photo_view = [review[k] for k in ("text", "excluded", "face", "x", "y", "side",
                                      "overview", "crop")]
    after_crop = [review["text"], summary, gallery, photo, review["face"], review["x"],
                  review["y"], review["side"], review["overview"], review["crop"]]

    def then_show_photo(event: gr.events.Dependency) -> gr.events.Dependency:
        # Explicit chains rather than photo.change: a new subject may have a photo of the
        # same name, which would not count as a change.
        return (event.then(handlers.photo_list, [subject, photo], photo, **quiet)
                .then(handlers.show_photo, [subject, photo], photo_view, **quiet))

    mode.change(lambda m: gr.update(visible=m == "face"), mode, margin,
                api_visibility="private", queue=False)
    then_show_photo(subject.change(handlers.show_subject, subject,
                                   [summary, gallery, rejected, mode, size, margin],
                                   api_name="subject_photos", show_progress="hidden"))
    prepare_event = prepare_btn.click(
        handlers.prepare, [subject, files, mode, size, margin],
        [summary, gallery, rejected, files, subject], api_name="prepare",
    )
    then_show_photo(prepare_event)
    photo.input(handlers.show_photo, [subject, photo], photo_view, **quiet)
    gallery.select(handlers.pick_from_gallery, subject, photo, **quiet).then(
        handlers.show_photo, [subject, photo], photo_view, **quiet)

    review["excluded"].input(
        handlers.exclude, [subject, photo, review["excluded"]],
        [review["text"], summary, gallery, photo], api_name="exclude_photo",
    )
    for slider in (review["x"], review["y"], review["side"]):
        slider.release(handlers.preview, [subject, photo, review["x"], review["y"],
                                          review["side"]],
                       [review["overview"], review["crop"]], **quiet)
    review["apply"].click(handlers.recrop, [subject, photo, review["x"], review["y"],
                                            review["side"]],
                          after_crop, api_name="recrop_photo")
    review["face"].input(handlers.choose_face, [subject, photo, review["face"]], after_crop,
                         api_name="choose_face")
    review["reset"].click(handlers.reset_crop, [subject, photo], after_crop,
                          api_name="reset_crop")

    rename_btn.click(handlers.rename, [subject, new_name],
                     [subject_message, subject, new_name], api_name="rename_subject")
    delete_btn.click(handlers.delete, [subject, confirm], [subject_message, subject, confirm],
                     api_name="delete_subject")
    return DataTab(subject=subject, prepare_event=prepare_event,
                   refresh_subjects=handlers.refresh)
