"""What the Data tab shows of a subject's photos: the summary, gallery labels, a photo's
review text, the table of photos not used and the crop sliders' settings.

Pure functions of a PrepareReport: no widgets, no disk, so they are tested on their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from ..studio import PhotoResult, PrepareReport

REJECTED_HEADERS = ["Photo", "Why it was not used"]
# The crop sliders' server-side limit; each photo sets the real one (its width/height).
SLIDER_LIMIT = 100_000
NO_PHOTO = "Prepare photos first; then pick one here (or click it in the gallery) to review it."
NO_SUBJECT = "Type a name for a new subject, or pick one you prepared before."
CAPTION_INFO = ("Describe what differs in this photo (pose, clothes, place); the "
                "identifier is put where the class noun stands, or in front. Blank: the "
                "instance prompt. Press Enter or Save caption to keep it.")


def rejected_table(report: PrepareReport | None) -> pd.DataFrame:
    rows = [[r.source, r.reason or "unknown"] for r in report.rejected] if report else []
    return pd.DataFrame(rows, columns=REJECTED_HEADERS)


def photo_label(number: int, result: PhotoResult, report: PrepareReport) -> str:
    label = f"{number}. {result.source}"
    if result.warnings:
        label += " ⚠️"
    if result.output in report.excluded:
        label += " (left out)"
    elif result.output in report.held_out:
        label += " (scoring only)"
    return label


def gallery_items(report: PrepareReport) -> list[tuple[str, str]]:
    return [(str(path), photo_label(n, r, report))
            for n, (r, path) in enumerate(zip(report.kept, report.kept_paths, strict=True), 1)]


def photo_choices(report: PrepareReport | None) -> list[tuple[str, str]]:
    if report is None:
        return []
    return [(photo_label(n, r, report), r.output) for n, r in enumerate(report.kept, 1)]


def summary(subject: str, report: PrepareReport) -> str:
    kept, rejected = len(report.kept), len(report.rejected)
    used, left_out = len(report.used), len(report.excluded)
    cfg = report.config
    line = (f"**{subject}**: {kept} photo{'s' if kept != 1 else ''} kept, {rejected} not used "
            f"({cfg.mode} mode, {cfg.size} px).")
    if report.scoring:
        line += (f" {len(report.scoring)} kept for scoring only (evaluation compares with "
                 "them; training never sees them)")
        line += "." if left_out else f", so {used} will be trained on."
    if left_out:
        line += f" You left {left_out} out of training, so {used} will be used."
    if not report.complete:
        line += " The last preparation did not finish: press Prepare again."
    elif report.faceless:
        line += (" No photo has a face: face mode is for people. For a pet or an object, "
                 "pick **Object or pet** as the crop mode and press Prepare again.")
    elif used < 3:
        line += " DreamBooth needs at least 3 good photos: add more and press Prepare again."
    else:
        line += " Ready to train: go to the **Train** tab."
    # The advice above already covers the photo-count and the no-face warnings.
    said = ("Only ", "No face was found") if used < 3 else ()
    notes = [w for w in report.warnings if not w.startswith(said)]
    return line + "".join(f"\n\n⚠️ {note}" for note in notes)


def unprepared_hint(subject: str, uploaded: int) -> str:
    """For a subject without prepared photos: what to do next."""
    if uploaded:
        return f"**{subject}** has {uploaded} uploaded photos, not prepared yet: press Prepare."
    return f"New subject **{subject}**: upload 3-20 photos and press Prepare."


def photo_text(report: PrepareReport, result: PhotoResult) -> str:
    # image_size is missing in manifests written before the review existed.
    size = "{}×{} px, ".format(*result.image_size) if result.image_size else ""
    x0, y0, x1, _ = result.crop_box or (0, 0, 0, 0)
    how = ("set by hand" if result.manual_crop
           else f"around face {result.face_index + 1}" if result.face_index is not None
           else "centre square")
    lines = [f"**{result.source}**: {size}crop {x1 - x0} px at ({x0}, {y0}), {how}."]
    if result.output in report.excluded:
        lines.append("Left out of training.")
    elif result.output in report.held_out:
        lines.append("For scoring only: never trained on, evaluation compares with it.")
    lines += [f"⚠️ {w}" for w in result.warnings] or ["No warnings."]
    return "\n\n".join(lines)


def face_choices(result: PhotoResult) -> dict:
    """The face picker's choices (numbered as on the photo), value and visibility."""
    faces = result.faces or []
    choices = [(f"Face {n}" + (" (largest)" if n == 1 else ""), n)
               for n in range(1, len(faces) + 1)]
    value = result.face_index + 1 if result.face_index is not None else None
    return {"choices": choices, "value": value, "visible": len(faces) > 1}


def crop_sliders(result: PhotoResult) -> tuple[dict, dict, dict]:
    """The x, y and side sliders set to the crop, with the photo's own limits."""
    width, height = result.image_size or (SLIDER_LIMIT, SLIDER_LIMIT)
    x0, y0, x1, _ = result.crop_box or (0, 0, min(width, height), 0)
    return ({"value": x0, "maximum": width}, {"value": y0, "maximum": height},
            {"value": x1 - x0, "maximum": min(width, height)})
