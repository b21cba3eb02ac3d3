"""The manifest of a prepared photo folder: the verdict on every photo, and its review edits.

`manifest.json` sits beside the crops; the Data tab, the review edits and training all read
it. File names only, never absolute paths, so the folder can be moved.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import PrepareConfig
from ..core.files import atomic_write_json, file_digest
from ..errors import InputError
from .images import IMAGE_SUFFIXES

MANIFEST_NAME = "manifest.json"
NO_FACE = "no face found"  # the verdict on a photo face mode cannot crop
# 2 added faces, review edits and warnings; 3 added held_out; 4 added captions. Older
# manifests still load (no held_out field = nothing held out, no caption = none).
MANIFEST_VERSION = 4
# The default share of photos kept for scoring only: one in HOLD_OUT_EVERY, and none below
# that many, since a set of 3-5 photos cannot spare one for training.
HOLD_OUT_EVERY = 6


def default_held_out(outputs: list[str]) -> list[str]:
    """The photos the default rule marks "for scoring only": every sixth in name order
    (deterministic, so a re-run marks the same photos), none for fewer than six."""
    ordered = sorted(outputs)
    return ordered[HOLD_OUT_EVERY - 1::HOLD_OUT_EVERY] if len(ordered) >= HOLD_OUT_EVERY else []


def photo_digest(path: Path) -> str:
    """What a manifest records of a photo's content: the first 16 hex digits of its SHA-256.
    Review edits follow the photo's content, not its position in the folder listing."""
    return file_digest(path)[:16]


def has_manifest(folder: Path) -> bool:
    return (Path(folder) / MANIFEST_NAME).is_file()


def image_files(folder: Path) -> list[Path]:
    """The images training takes from `folder`: a prepared folder's kept crops that were
    not left out (its manifest says which), else every image file in it (class images)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Image folder {folder} does not exist or is not a folder.")
    if has_manifest(folder):
        return [folder / r.output for r in training_results(folder) if r.output]
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def training_results(folder: Path) -> list[PhotoResult]:
    """The photos of a prepared folder training may read, after refusing a manifest that
    would let a held-out photo (by name or by content) reach training."""
    report = load_manifest(folder)
    path = Path(folder) / MANIFEST_NAME
    used, scoring = report.used, report.scoring
    if not used and scoring:
        raise InputError(
            f"'{path}' marks every usable photo 'for scoring only': nothing is left to train "
            "on. Take the mark off some photos on the Data tab (or prepare them again)."
        )
    held_names = {r.output for r in scoring}
    held_digests = {r.digest for r in scoring if r.digest}
    for r in used:
        if r.output in held_names or (r.digest and r.digest in held_digests):
            raise InputError(
                f"'{path}' lists '{r.output}' for training although it (or a copy of it) is "
                "marked 'for scoring only'. Remove the copy or the mark on the Data tab, "
                "or prepare the photos again."
            )
    return used


def training_captions(folder: Path) -> dict[str, str]:
    """The captions of a prepared folder's training photos, by crop name (empty without a
    manifest or any caption)."""
    if not has_manifest(folder):
        return {}
    return {r.output: r.caption for r in training_results(folder) if r.output and r.caption}


def scoring_files(folder: Path) -> list[Path]:
    """The held-out crops of a prepared folder (empty without a manifest or any marks)."""
    folder = Path(folder)
    if not has_manifest(folder):
        return []
    return [folder / r.output for r in load_manifest(folder).scoring if r.output]


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
    # The crop's grey 64x64 copy (base64) that tells a copy from another shot against
    # the same backdrop; None in manifests written before it was stored.
    thumbnail: str | None = None
    warnings: list[str] = field(default_factory=list)
    # What differs in this photo ("a dog on a sofa"); training uses it as the photo's prompt,
    # with the identifier put in (train/captions.py). None: the instance prompt.
    caption: str | None = None


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
    # Output names of kept crops set aside "for scoring only": never trained on, the real
    # photos subject fidelity is measured against.
    held_out: list[str] = field(default_factory=list)

    @property
    def used(self) -> list[PhotoResult]:
        """Kept photos that are neither excluded nor held out: what training will see.
        Names only; training_results also refuses a held-out photo's copy under another name."""
        skip = set(self.excluded) | set(self.held_out)
        return [r for r in self.kept if r.output not in skip]

    @property
    def scoring(self) -> list[PhotoResult]:
        """Kept, not excluded photos marked "for scoring only"."""
        held, excluded = set(self.held_out), set(self.excluded)
        return [r for r in self.kept if r.output in held and r.output not in excluded]

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
    def faceless(self) -> bool:
        """Face mode found a face in none of the photos: most likely a pet or an object."""
        return (self.config.mode == "face" and any(r.reason == NO_FACE for r in self.results)
                and not any(r.faces for r in self.results))

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
            "held_out": list(self.held_out),
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
            held_out=[str(name) for name in data.get("held_out", [])],
        )


def write_manifest(report: PrepareReport, output_dir: Path) -> Path:
    """Write `output_dir/manifest.json` atomically, so readers never see half a file."""
    return atomic_write_json(Path(output_dir) / MANIFEST_NAME, report.to_dict(), sort_keys=False)


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
