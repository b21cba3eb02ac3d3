"""What is in a shared class-image folder, and adding your own pictures of the class.

Prior preservation trains on pictures of the class ("a photo of dog") next to the subject.
They live in one folder per (base model, class prompt, resolution), reused by every subject
of that class. DreamStudio fills it with the base model's own images, named class_NNNN.png
(and notes the prompt in class_images.json); anything else in it was put there by the user,
and training uses those pictures just the same.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..core.files import file_digest, unused_path
from ..data.images import IMAGE_SUFFIXES
from ..data.manifest import image_files
from ..errors import InputError

GENERATED_NAME = re.compile(r"^class_\d{4,}\.png$")
RECORD = "class_images.json"
OWN_PREFIX = "own_"


@dataclass
class ClassImage:
    path: Path
    generated: bool  # made by DreamStudio from the class prompt; else supplied by the user

    @property
    def source(self) -> str:
        return "generated" if self.generated else "yours"


@dataclass
class ClassImageSet:
    folder: Path
    images: list[ClassImage]
    wanted: int
    record: dict  # class_images.json as DreamStudio last wrote it ({} if none)

    @property
    def generated(self) -> int:
        return sum(i.generated for i in self.images)

    @property
    def supplied(self) -> int:
        return len(self.images) - self.generated

    @property
    def missing(self) -> int:
        """How many training will generate first (it fills the folder up to `wanted`)."""
        return max(0, self.wanted - len(self.images))


def list_class_images(folder: Path, wanted: int) -> ClassImageSet:
    folder = Path(folder)
    files = image_files(folder) if folder.is_dir() else []
    record = {}
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    images = [ClassImage(p, bool(GENERATED_NAME.match(p.name))) for p in files]
    return ClassImageSet(folder, images, wanted, record)


def _check_image(path: Path) -> str | None:
    """Why `path` cannot serve as a class image, or None if it can."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file type ({', '.join(IMAGE_SUFFIXES)})"
    try:
        with Image.open(path) as im:
            im.verify()
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        return f"not a readable image ({type(exc).__name__})"
    return None


def add_class_images(folder: Path, files: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Copy the user's class pictures into `folder`; return (added, [(name, why skipped)]).

    Copies are named own_<name> so they can never be taken for (or overwritten by) the
    generated class_NNNN.png files; exact duplicates of a picture already there are skipped.
    """
    if not files:
        raise InputError("No pictures chosen: pick image files of the class to add.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    known = {file_digest(p) for p in image_files(folder)}
    added, skipped = [], []
    for src in map(Path, files):
        if not src.is_file():
            skipped.append((src.name, "file not found"))
            continue
        why = _check_image(src)
        if why:
            skipped.append((src.name, why))
            continue
        digest = file_digest(src)
        if digest in known:
            skipped.append((src.name, "already in the folder"))
            continue
        known.add(digest)
        stem = re.sub(r"[^\w.-]+", "_", src.stem).strip("._")[:60] or "image"
        dest = unused_path(folder, f"{OWN_PREFIX}{stem}", src.suffix.lower())
        shutil.copyfile(src, dest)
        added.append(dest)
    return added, skipped
