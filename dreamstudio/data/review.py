"""Edits a person makes while reviewing prepared photos, each saved to the manifest at once.

Exclude or re-include a crop, caption it, move or resize its square by hand, or pick
another of the faces found in the photo. Re-crops always start from the original photo, never from the
previous crop, so repeated edits lose no quality. Warnings are recomputed after every edit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from ..errors import InputError
from .checks import review_warnings
from .crops import Box, centre_crop_box, crop_box_for_face, fit_square, save_crop
from .images import open_rgb
from .manifest import PhotoResult, PrepareReport, load_manifest, photo_digest, write_manifest
from .prepare import measure_crop

# Side of the overview image that shows the whole photo with its crop square.
PREVIEW_SIDE = 512
CROP_COLOUR = (255, 200, 0)
FACE_COLOUR = (0, 200, 255)


@dataclass
class Preview:
    """What the Data tab shows while a crop is being adjusted."""

    overview: Image.Image  # the whole photo, crop square and numbered faces drawn on it
    crop: Image.Image  # the crop as training will see it
    box: Box  # the crop box after fitting it inside the photo


def set_excluded(output_dir: Path, output: str, excluded: bool) -> PrepareReport:
    """Leave the crop named `output` out of training, or take it back in."""
    report = _open(output_dir)
    report.excluded = _marked(report, report.excluded, output, excluded)
    return _save(report, output_dir)


def set_held_out(output_dir: Path, output: str, held_out: bool) -> PrepareReport:
    """Mark the crop named `output` "for scoring only" (never trained on), or take it back."""
    report = _open(output_dir)
    report.held_out = _marked(report, report.held_out, output, held_out)
    if held_out and not report.used:
        raise InputError(
            f"'{output}' is the last photo left for training; it cannot also be kept for "
            "scoring only. Take the mark off another photo first."
        )
    return _save(report, output_dir)


# A caption is a prompt: CLIP reads 77 tokens, so a longer text is cut off in training anyway.
MAX_CAPTION_CHARS = 300


def set_caption(output_dir: Path, output: str, caption: str | None) -> PrepareReport:
    """Describe what differs in the crop named `output` (pose, clothes, place); training
    uses it as that photo's prompt. Blank: no caption (the instance prompt is used)."""
    text = " ".join((caption or "").split())  # one line: newlines and runs of spaces go
    if len(text) > MAX_CAPTION_CHARS:
        raise InputError(
            f"The caption of '{output}' is {len(text)} characters long; keep it under "
            f"{MAX_CAPTION_CHARS} (the text encoder reads about 60 words at most)."
        )
    report = _open(output_dir)
    report.find(output).caption = text or None
    return _save(report, output_dir)


def _marked(report: PrepareReport, names: list[str], output: str, on: bool) -> list[str]:
    report.find(output)  # refuses unknown names
    names = [name for name in names if name != output]
    if on:
        names.append(output)
    # Kept in the order of the photos, so the manifest reads naturally.
    order = {r.output: i for i, r in enumerate(report.results)}
    return sorted(names, key=lambda name: order.get(name, len(order)))


def recrop(source_dir: Path, output_dir: Path, output: str, x: float, y: float,
           side: float) -> PrepareReport:
    """Crop the square with top-left (x, y) and `side` (photo pixels) out of the original.

    The square is fitted inside the photo rather than refused, so dragging a slider past
    an edge just stops at the edge.
    """
    _check_number(x, "left edge (x)")
    _check_number(y, "top edge (y)")
    _check_number(side, "side")
    report = _open(output_dir)
    result = report.find(output)
    img = _original(source_dir, result)
    box = fit_square(x, y, side, img.size)
    result.manual_crop = True
    result.face_index = None
    result.face_prob = None
    result.face_box = None
    return _apply(report, output_dir, result, img, box)


def choose_face(source_dir: Path, output_dir: Path, output: str, index: int) -> PrepareReport:
    """Crop around face number `index` (0 = the most prominent) of those found."""
    report = _open(output_dir)
    result = report.find(output)
    faces = result.faces or []
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(faces):
        label = index + 1 if isinstance(index, int) else repr(index)
        found = {0: "no face was", 1: "1 face was"}.get(len(faces), f"{len(faces)} faces were")
        raise InputError(
            f"Photo '{result.source}' has no face {label}: {found} found in it. "
            "Pick one of the faces listed, or set the crop by hand."
        )
    img = _original(source_dir, result)
    face = faces[index]
    box = crop_box_for_face(face["box"], img.size, report.config.face_margin)
    result.manual_crop = False
    result.face_index = index
    result.face_prob = face["prob"]
    result.face_box = list(face["box"])
    return _apply(report, output_dir, result, img, box)


def reset_crop(source_dir: Path, output_dir: Path, output: str) -> PrepareReport:
    """Back to the automatic crop: the most prominent face, or the centre square."""
    report = _open(output_dir)
    result = report.find(output)
    if result.faces:
        return choose_face(source_dir, output_dir, output, 0)
    img = _original(source_dir, result)
    result.manual_crop = False
    return _apply(report, output_dir, result, img, centre_crop_box(img.size))


def preview(source_dir: Path, report: PrepareReport, output: str,
            box: tuple[float, float, float] | None = None, crop_side: int = 256) -> Preview:
    """The photo with a crop square drawn on it: `box` = (x, y, side) if given (fitted
    inside the photo), else the current crop."""
    result = report.find(output)
    img = _original(source_dir, result, check_digest=False)
    if box is None:
        fitted = tuple(result.crop_box or centre_crop_box(img.size))
    else:
        for value, what in zip(box, ("left edge (x)", "top edge (y)", "side"), strict=True):
            _check_number(value, what)
        fitted = fit_square(*box, img.size)
    scale = min(1.0, PREVIEW_SIDE / max(img.size))
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    overview = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    draw = ImageDraw.Draw(overview)
    line = max(2, round(max(size) / 150))
    for number, face in enumerate(result.faces or [], start=1):
        x0, y0, x1, y1 = (v * scale for v in face["box"])
        draw.rectangle((x0, y0, x1, y1), outline=FACE_COLOUR, width=max(1, line // 2))
        draw.text((x0 + 3, y0 + 2), str(number), fill=FACE_COLOUR)
    draw.rectangle(tuple(v * scale for v in fitted), outline=CROP_COLOUR, width=line)
    crop = img.resize((crop_side, crop_side), Image.Resampling.BILINEAR, box=fitted,
                      reducing_gap=2.0)
    return Preview(overview, crop, fitted)


def _check_number(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"The crop's {what} must be a number of pixels, got {value!r}.")


def _open(output_dir: Path) -> PrepareReport:
    report = load_manifest(output_dir)
    if not report.complete:
        raise InputError(
            f"The last preparation in '{output_dir}' did not finish, so its photos cannot be "
            "edited: press Prepare again first."
        )
    return report


def _original(source_dir: Path, result: PhotoResult, check_digest: bool = True) -> Image.Image:
    path = Path(source_dir) / result.source
    # Opened first: it refuses a link out of the folder before anything reads it.
    img = open_rgb(path, folder=source_dir)  # ImageRejected names the file if it is unusable
    if check_digest and result.digest:
        digest = photo_digest(path)
        if digest != result.digest:
            raise InputError(
                f"Photo '{result.source}' changed since it was prepared, so its crop no "
                "longer matches: press Prepare again, then edit it."
            )
    if result.image_size and list(img.size) != list(result.image_size):
        raise InputError(
            f"Photo '{result.source}' is {img.width}x{img.height} now but was "
            f"{result.image_size[0]}x{result.image_size[1]} when prepared: press Prepare "
            "again, then edit it."
        )
    return img


def _apply(report: PrepareReport, output_dir: Path, result: PhotoResult, img: Image.Image,
           box: Box) -> PrepareReport:
    save_crop(img, box, report.config.size, Path(output_dir) / result.output)
    measure_crop(result, img, box)
    return _save(report, output_dir)


def _save(report: PrepareReport, output_dir: Path) -> PrepareReport:
    review_warnings(report)
    write_manifest(report, output_dir)
    return report
