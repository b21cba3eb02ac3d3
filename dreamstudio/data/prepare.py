"""Turn a handful of user photos into square training crops plus a manifest of what happened.

Every photo gets a verdict: kept (with its crop on disk) or rejected (with a reason a person
understands). One bad photo never stops the batch; the user fixes or drops it and re-runs.
Kept photos also get warnings (blurry, small, near-duplicate) that the person weighs; their
review edits (excluded, hand-made crop, chosen face, caption) survive a later re-run.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from ..config import PrepareConfig
from ..errors import InputError
from .checks import dhash, review_warnings, sharpness, thumbnail
from .crops import Box, centre_crop_box, crop_box_for_face, fit_square, save_crop
from .faces import FaceDetector, faces_by_prominence, shared_detector
from .images import IMAGE_SUFFIXES, ImageRejected, open_rgb
from .manifest import (
    MANIFEST_NAME,
    NO_FACE,
    PhotoResult,
    PrepareReport,
    default_held_out,
    photo_digest,
    write_manifest,
)
from .uploads import Upload, add_photos

# Files that operating systems drop into photo folders; not worth a "not an image" line.
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini"})

Progress = Callable[[int, int, str], None]


def prepare_subject(subject: str, originals: Path, photos: Path, files: list[Path],
                    config: PrepareConfig, progress: Progress | None = None) -> PrepareReport:
    """Add uploaded `files` to a subject's `originals` and (re)crop all of them into
    `photos`. Uploads that were already there are named in the report's warnings (for this
    answer only; the manifest does not keep them)."""
    upload = add_photos(originals, files) if files else Upload()
    sources = list_image_files(originals) if Path(originals).is_dir() else []
    if not sources:
        raise InputError(f"Subject '{subject}' has no photos yet: upload 3-20 photos of it first.")
    report = prepare_photos(sources, photos, config, progress=progress)
    if upload.warning(subject):
        report.warnings.insert(0, upload.warning(subject))
    return report


def list_image_files(input_dir: Path) -> list[Path]:
    """Every non-hidden entry of `input_dir` that may have been meant as a photo, by name.

    No suffix filter: a stray .txt or .heic should show up as rejected with a reason rather
    than silently vanish, so the user knows why their photo count is lower. The same goes
    for broken links, pipes and a folder named like a photo; only plain sub-folders are
    left out.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(
            f"Photo folder '{input_dir}' does not exist or is not a folder. "
            "Pick the folder that holds your 3-20 photos."
        )
    files = [
        p
        for p in input_dir.iterdir()
        if (not p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES)
        and not p.name.startswith(".")
        and p.name != MANIFEST_NAME
        and p.name.lower() not in _JUNK_NAMES
    ]
    return sorted(files, key=lambda p: p.name)


def prepare_photos(
    sources: list[Path],
    output_dir: Path,
    config: PrepareConfig,
    detector: FaceDetector | None = None,
    progress: Progress | None = None,
) -> PrepareReport:
    """Crop every source into `output_dir` and write `output_dir/manifest.json`.

    Crops from a previous run listed in the old manifest are deleted first, so the folder
    holds exactly this run's crops. `progress(done, total, message)` is called before each
    photo and once at the end.
    """
    sources = [Path(s) for s in sources]
    output_dir = Path(output_dir)
    _refuse_overlap(sources, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    edits = _previous_edits(output_dir)
    _remove_previous_run(output_dir)
    if config.mode == "face" and detector is None:
        detector = shared_detector()

    report = PrepareReport(
        results=[],
        config=config,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        complete=False,
        output_dir=output_dir,
    )
    total = len(sources)
    width = max(3, len(str(max(total - 1, 0))))
    seen: dict[str, str] = {}
    for index, source in enumerate(sources):
        if progress is not None:
            progress(index, total, f"Preparing {source.name} ({index + 1}/{total})")
        name = f"{index:0{width}d}_{_safe_stem(source.stem)}.png"
        result = _prepare_one(source, output_dir / name, config, detector, seen, edits)
        report.results.append(result)
        edit = edits.get((result.source, result.digest or ""))
        if result.kept and edit is not None and edit.excluded:
            report.excluded.append(result.output)
        # Rewritten after every photo so an interrupted run still lists its crops, and the
        # next run can clean them up.
        write_manifest(report, output_dir)

    report.held_out = _held_out(report, edits) if config.hold_out else []
    report.complete = True
    review_warnings(report)
    write_manifest(report, output_dir)
    if progress is not None:
        kept, rejected = len(report.kept), len(report.rejected)
        progress(total, total, f"Done: {kept} kept, {rejected} rejected")
    return report


@dataclass
class _Edit:
    """What the person changed on one photo in the review, carried into the next run."""

    excluded: bool = False
    crop_box: list[int] | None = None  # set by hand
    face_index: int | None = None
    held_out: bool | None = None  # None: the last run did not record it (use the default)
    caption: str | None = None


def _held_out(report: PrepareReport, edits: dict[tuple[str, str], _Edit]) -> list[str]:
    """The default marking, overridden photo by photo by the marks of the last run, so a
    re-run neither undoes the person's choices nor moves the scoring photos around."""
    kept = [r for r in report.kept if r.output]
    marked = set(default_held_out([r.output for r in kept]))
    for r in kept:
        edit = edits.get((r.source, r.digest or ""))
        if edit is not None and edit.held_out is not None:
            marked.discard(r.output)
            if edit.held_out:
                marked.add(r.output)
    return [r.output for r in kept if r.output in marked]


def _previous_edits(output_dir: Path) -> dict[tuple[str, str], _Edit]:
    """Review edits of the last run, keyed by (source name, content digest).

    Read leniently: a damaged or old manifest just means no edits to keep.
    """
    path = output_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        excluded = set(data.get("excluded", []))
        held = data.get("held_out")
        held = set(held) if isinstance(held, list) else None
        edits = {}
        for r in data.get("results", []):
            if not r.get("kept") or not r.get("digest"):
                continue
            box = r.get("crop_box") if r.get("manual_crop") else None
            face = r.get("face_index")
            edits[(r["source"], r["digest"])] = _Edit(
                excluded=r.get("output") in excluded,
                crop_box=[int(v) for v in box] if box and len(box) == 4 else None,
                face_index=face if isinstance(face, int) and face > 0 else None,
                held_out=None if held is None else r.get("output") in held,
                caption=r["caption"] if isinstance(r.get("caption"), str) else None,
            )
        return edits
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return {}


def measure_crop(result: PhotoResult, img: Image.Image, box: Sequence[int]) -> None:
    """Record the crop box and what the warnings are computed from."""
    result.crop_box = [int(v) for v in box]
    result.sharpness = round(sharpness(img, box), 1)
    result.dhash = dhash(img, box)
    result.thumbnail = thumbnail(img, box)


def _prepare_one(
    source: Path,
    output: Path,
    config: PrepareConfig,
    detector: FaceDetector | None,
    seen: dict[str, str],
    edits: dict[tuple[str, str], _Edit] | None = None,
) -> PhotoResult:
    result = PhotoResult(source=source.name, kept=False)
    try:
        img = open_rgb(source, folder=source.parent)
        result.image_size = list(img.size)
        duplicate_of = _note_content(source, seen, result)
        if duplicate_of is not None:
            # DreamBooth would see this photo twice as often as the others.
            result.reason = f"duplicate of {duplicate_of} (same file content)"
            return result
        short = min(img.size)
        if short < config.min_short_side:
            result.reason = (
                f"too small: {img.width}x{img.height}, need at least "
                f"{config.min_short_side} px on the shorter side"
            )
            return result
        edit = (edits or {}).get((result.source, result.digest or "")) or _Edit()
        box: Box | None = None
        if edit.crop_box is not None:
            x0, y0, x1, _ = edit.crop_box
            box = fit_square(x0, y0, x1 - x0, img.size)
            result.manual_crop = True
        if config.mode == "face":
            assert detector is not None
            faces = faces_by_prominence(detector.detect(img))
            result.faces = [{"box": [round(v, 2) for v in f.box], "prob": round(f.prob, 6)}
                            for f in faces]
            if not faces and box is None:
                result.reason = NO_FACE
                return result
            if box is None:
                index = edit.face_index if edit.face_index is not None else 0
                index = index if index < len(faces) else 0
                face = faces[index]
                box = crop_box_for_face(face.box, img.size, config.face_margin)
                result.face_index = index
                result.face_prob = round(face.prob, 6)
                result.face_box = [round(v, 2) for v in face.box]
        elif box is None:
            box = centre_crop_box(img.size)
        save_crop(img, box, config.size, output)
        measure_crop(result, img, box)
    except ImageRejected as exc:
        result.reason = exc.reason
        return result
    except OSError as exc:
        result.reason = f"could not read or save: {exc}"
        return result
    except Exception as exc:  # noqa: BLE001 - one odd photo must not stop the batch
        result.reason = f"unexpected error ({type(exc).__name__}: {exc})"
        return result
    result.kept = True
    result.output = output.name
    result.caption = edit.caption
    return result


def _note_content(source: Path, seen: dict[str, str], result: PhotoResult) -> str | None:
    digest = result.digest = photo_digest(source)
    if digest in seen:
        return seen[digest]
    seen[digest] = source.name
    return None


def _safe_stem(stem: str) -> str:
    # ASCII-only names survive every filesystem, zip tool and shell the crops may meet.
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_stem).strip("_-")
    return safe[:60] or "photo"


def _refuse_overlap(sources: list[Path], output_dir: Path) -> None:
    # Cleaning the output folder would delete crops the user is now feeding back in, and
    # the next folder scan would pick our crops up as photos.
    out = output_dir.resolve()
    for source in sources:
        # The folder, not the file: a link's target is open_rgb's business, and may loop.
        if source.parent.resolve() == out:
            raise InputError(
                f"'{source.name}' is inside the output folder '{output_dir}'. "
                "Choose an output folder that is separate from your photos."
            )


def _remove_previous_run(output_dir: Path) -> None:
    manifest = output_dir / MANIFEST_NAME
    if not manifest.exists():
        return
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        outputs = [r.get("output") for r in data.get("results", [])]
    except (OSError, ValueError, AttributeError, TypeError):
        outputs = []  # unreadable manifest: leave unknown files alone rather than guess
    for name in outputs:
        # Only plain PNG names directly inside output_dir: a tampered manifest must not be
        # able to delete anything else.
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".png"):
            continue
        try:
            (output_dir / name).unlink(missing_ok=True)
        except OSError:
            pass  # a locked file is overwritten or left behind; not worth failing the run
    manifest.unlink(missing_ok=True)
