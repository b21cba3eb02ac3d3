"""Turn a handful of user photos into square training crops plus a manifest of what happened.

Every photo gets a verdict: kept (with its crop on disk) or rejected (with a reason a person
understands). One bad photo never stops the batch; the user fixes or drops it and re-runs.
Kept photos also get warnings (blurry, small, near-duplicate) that the person weighs; their
review edits (excluded, hand-made crop, chosen face) survive a later re-run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InputError
from .checks import dhash, review_warnings, sharpness
from .faces import FaceDetector, faces_by_prominence, shared_detector
from .images import ImageRejected, open_rgb

MODES = ("face", "object")
MANIFEST_NAME = "manifest.json"
# 2 added faces, review edits and warnings; version 1 manifests still load.
MANIFEST_VERSION = 2

# Files that operating systems drop into photo folders; not worth a "not an image" line.
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini"})

Box = tuple[int, int, int, int]
Progress = Callable[[int, int, str], None]


@dataclass
class PrepareConfig:
    """How photos become crops.

    mode: "face" crops around the most prominent face; "object" takes the largest centred
        square (the subject is assumed to be roughly centred).
    size: side of the square output crops in pixels.
    face_margin: crop side = face_margin x the larger side of the face box; 2.2 frames the
        whole head and some shoulders, which DreamBooth needs to learn hair and head shape.
    min_side: photos whose shorter side is below this are rejected; None means size // 2,
        i.e. at most 2x upscaling in object mode.
    """

    mode: str = "face"
    size: int = 512
    face_margin: float = 2.2
    min_side: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(
                f"Crop mode {self.mode!r} is not known. Choose 'face' for a person "
                "or 'object' for anything else."
            )
        if not _is_int(self.size) or not 64 <= self.size <= 2048 or self.size % 8:
            raise InputError(
                f"Crop size {self.size!r} is not usable: it must be a whole number of pixels "
                "from 64 to 2048 and a multiple of 8 (Stable Diffusion's latent grid). "
                "Use 512 for SD 1.x or 1024 for SDXL."
            )
        margin = self.face_margin
        is_number = isinstance(margin, int | float) and not isinstance(margin, bool)
        if not is_number or not math.isfinite(margin) or margin < 1.0:
            raise InputError(
                f"Face margin {margin!r} is not usable: it must be a number >= 1.0 "
                "(1.0 = just the face, 2.2 = head and shoulders)."
            )
        if self.min_side is not None and (not _is_int(self.min_side) or self.min_side < 1):
            raise InputError(
                f"Minimum photo side {self.min_side!r} is not usable: give a positive whole "
                "number of pixels, or leave it empty to use half the crop size."
            )

    @property
    def min_short_side(self) -> int:
        """The effective minimum shorter side (resolved here, not in __post_init__, so that
        dataclasses.replace(config, size=...) keeps following the new size)."""
        return self.min_side if self.min_side is not None else self.size // 2


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class PhotoResult:
    """The verdict on one source photo. File names only: the manifest must survive a move.

    Boxes are (x0, y0, x1, y1) in the upright photo's pixels (EXIF rotation applied).
    """

    source: str
    kept: bool
    reason: str | None = None
    crop_box: list[int] | None = None
    output: str | None = None
    face_prob: float | None = None
    face_box: list[float] | None = None
    # First 16 hex digits of the source's SHA-256: review edits follow the photo's content,
    # not its position in the folder listing.
    digest: str | None = None
    image_size: list[int] | None = None
    # Every face found, most prominent first ({"box": [...], "prob": p}); face mode only.
    faces: list[dict] | None = None
    face_index: int | None = None  # which of `faces` the crop follows
    manual_crop: bool = False  # the crop box was set by hand
    sharpness: float | None = None  # variance of the Laplacian, see photo_checks
    dhash: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class PrepareReport:
    results: list[PhotoResult]
    config: PrepareConfig = field(default_factory=PrepareConfig)
    created: str = ""
    # False while a run is under way or if it died: the crops listed exist, others may not.
    complete: bool = True
    # Where the crops live; not written to the manifest so the folder can be moved.
    output_dir: Path | None = None
    # Output names of kept crops the person left out of training (train_data skips them).
    excluded: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # about the set as a whole

    @property
    def used(self) -> list[PhotoResult]:
        """Kept photos that are not excluded: what training will see."""
        excluded = set(self.excluded)
        return [r for r in self.kept if r.output not in excluded]

    def find(self, output: str) -> PhotoResult:
        """The kept result whose crop is named `output`."""
        for result in self.kept:
            if result.output == output:
                return result
        raise InputError(
            f"There is no prepared photo named '{output}'. Pick one of the photos shown on "
            "the Data tab (or press Prepare again if the list is out of date)."
        )

    @property
    def kept(self) -> list[PhotoResult]:
        return [r for r in self.results if r.kept]

    @property
    def rejected(self) -> list[PhotoResult]:
        return [r for r in self.results if not r.kept]

    @property
    def kept_paths(self) -> list[Path]:
        """Absolute paths of the kept crops, in source order."""
        if self.output_dir is None:
            raise ValueError("this report has no output_dir")
        return [self.output_dir / r.output for r in self.kept if r.output]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "created": self.created,
            "complete": self.complete,
            "config": asdict(self.config),
            "results": [asdict(r) for r in self.results],
            "excluded": list(self.excluded),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], output_dir: Path | None = None) -> PrepareReport:
        # Unknown keys are dropped so a manifest from a newer version still opens.
        known = {f.name for f in fields(PhotoResult)}
        return cls(
            results=[PhotoResult(**{k: v for k, v in r.items() if k in known})
                     for r in data["results"]],
            config=PrepareConfig(**data["config"]),
            created=data.get("created", ""),
            complete=bool(data.get("complete", True)),
            output_dir=output_dir,
            excluded=[str(name) for name in data.get("excluded", [])],
            warnings=[str(text) for text in data.get("warnings", [])],
        )


def crop_box_for_face(face_box: Sequence[float], image_size: tuple[int, int], margin: float) -> Box:
    """Integer square (x0, y0, x1, y1) centred on the face, side = margin x larger face side.

    The square is moved inside the image rather than clipped, so the crop stays square and
    the face stays as central as the borders allow; if the image is too small for the wanted
    side, the side shrinks to the image's shorter side.
    """
    x0, y0, x1, y1 = (float(v) for v in face_box)
    width, height = image_size
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {image_size}")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box must have positive width and height, got {face_box}")
    side = round(margin * max(x1 - x0, y1 - y0))
    side = max(1, min(side, width, height))
    left = round((x0 + x1) / 2 - side / 2)
    top = round((y0 + y1) / 2 - side / 2)
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return (left, top, left + side, top + side)


def fit_square(x: float, y: float, side: float, image_size: tuple[int, int]) -> Box:
    """The square with top-left (x, y) and `side`, made to fit the image: the side shrinks
    to the shorter image side at most, then the square moves inside (never clipped, so the
    crop stays square). Used for crops set by hand."""
    width, height = image_size
    side = max(1, min(round(side), width, height))
    left = min(max(round(x), 0), width - side)
    top = min(max(round(y), 0), height - side)
    return (left, top, left + side, top + side)


def centre_crop_box(image_size: tuple[int, int]) -> Box:
    """The largest square centred in an image of `image_size` (width, height)."""
    width, height = image_size
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return (left, top, left + side, top + side)


def list_image_files(input_dir: Path) -> list[Path]:
    """Every regular, non-hidden file in `input_dir`, sorted by name.

    No suffix filter: a stray .txt or .heic should show up as rejected with a reason rather
    than silently vanish, so the user knows why their photo count is lower.
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
        if p.is_file()
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


def _previous_edits(output_dir: Path) -> dict[tuple[str, str], _Edit]:
    """Review edits of the last run, keyed by (source name, content digest).

    Read leniently: a damaged or old manifest just means no edits to keep.
    """
    path = output_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        excluded = set(data.get("excluded", []))
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
            )
        return edits
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return {}


def save_crop(img: Image.Image, box: Sequence[int], size: int, output: Path) -> None:
    """Cut `box` out of `img`, scale it to size x size and write it as PNG atomically, so a
    failed re-crop leaves the previous crop in place."""
    crop = img.resize((size, size), Image.Resampling.LANCZOS, box=tuple(box), reducing_gap=3.0)
    tmp = output.with_name(f".{output.stem}.tmp.png")
    try:
        crop.save(tmp, format="PNG")
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def measure_crop(result: PhotoResult, img: Image.Image, box: Sequence[int]) -> None:
    """Record the crop box and what the warnings are computed from."""
    result.crop_box = [int(v) for v in box]
    result.sharpness = round(sharpness(img, box), 1)
    result.dhash = dhash(img, box)


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
        img = open_rgb(source)
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
                result.reason = "no face found"
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
    return result


def _note_content(source: Path, seen: dict[str, str], result: PhotoResult) -> str | None:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    result.digest = digest[:16]
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
        if source.resolve().parent == out:
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


def write_manifest(report: PrepareReport, output_dir: Path) -> Path:
    """Write `output_dir/manifest.json` atomically, so readers never see half a file."""
    target = Path(output_dir) / MANIFEST_NAME
    text = json.dumps(report.to_dict(), indent=2, ensure_ascii=False)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".manifest-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_manifest(output_dir: Path) -> PrepareReport:
    """Read back the report of the last prepare run in `output_dir`."""
    output_dir = Path(output_dir)
    path = output_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PrepareReport.from_dict(data, output_dir=output_dir)
    except FileNotFoundError:
        raise InputError(
            f"'{path}' does not exist: this folder has no prepared photos. "
            "Run the photo preparation step first."
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"'{path}' is unreadable or damaged ({exc}). Run the photo preparation step again."
        ) from None
