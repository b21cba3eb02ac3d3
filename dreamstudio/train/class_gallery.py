"""What is in a shared class-image folder, and adding your own pictures of the class.

Prior preservation trains on pictures of the class ("a photo of dog") next to the subject.
They live in one folder per (base model, class prompt, resolution), reused by every subject
of that class. DreamStudio fills it with the base model's own images, named class_NNNN.png,
and records in class_images.json how it made each one (its recipe: model, prompt, size,
sampler, steps, precision, seed). A run uses the generated images whose recipe matches its
own and generates the rest; anything the record does not list was put there by the user,
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

GENERATED_NAME = re.compile(r"^class_(\d{4,})\.png$")
RECORD = "class_images.json"
OWN_PREFIX = "own_"
# What makes two class images alike. The seed is recorded but not compared: another seed
# draws another sample of the same class, as good for the prior, and regenerating a
# hundred images for a new seed would cost more than the training.
RECIPE_KEYS = ("model", "class_prompt", "negative_prompt", "resolution", "sampler", "steps",
               "precision")


def _normal(key: str, value):
    return " ".join(str(value).lower().split()) if key == "class_prompt" else value


def recipe_matches(made: dict | None, wanted: dict | None) -> bool:
    """True if an image made by `made` serves a run that wants `wanted`. An image recorded
    before recipes were (only its prompt and size are known) is judged on those."""
    if wanted is None:
        return True
    if not made or "class_prompt" not in made or "resolution" not in made:
        return False
    return all(_normal(k, made[k]) == _normal(k, wanted[k])
               for k in RECIPE_KEYS if k in made and k in wanted)


def describe_recipe(recipe: dict) -> str:
    """'a photo of dog' at 64 px, 25 steps, bf16: how an image was (or will be) made."""
    parts = [f"'{recipe.get('class_prompt')}' at {recipe.get('resolution')} px"]
    parts += [f"{recipe[k]} steps" if k == "steps" else f"{k} {recipe[k]}"
              for k in ("steps", "precision", "model") if recipe.get(k) is not None]
    return ", ".join(parts)


@dataclass
class ClassImage:
    path: Path
    recipe: dict | None  # how DreamStudio made it; None: supplied by the user
    matches: bool = True  # made as the run asking wants (always True for the user's)

    @property
    def generated(self) -> bool:
        return self.recipe is not None

    @property
    def source(self) -> str:
        if not self.generated:
            return "yours"
        return "generated" if self.matches else "generated differently (not used)"


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
    def usable(self) -> list[ClassImage]:
        """What a run may train on: your pictures first, then the matching generated ones."""
        return ([i for i in self.images if not i.generated]
                + [i for i in self.images if i.generated and i.matches])

    @property
    def chosen(self) -> list[Path]:
        """The `wanted` images a run trains on; any others stay for later runs."""
        return [i.path for i in self.usable[:self.wanted]]

    @property
    def mismatched(self) -> list[ClassImage]:
        return [i for i in self.images if i.generated and not i.matches]

    @property
    def missing(self) -> int:
        """How many training will generate first (it fills the folder up to `wanted`)."""
        return max(0, self.wanted - len(self.usable))

    @property
    def next_index(self) -> int:
        """The number of the next class_NNNN.png: after every such name, so no file is
        ever overwritten (the user's, or one made differently)."""
        numbers = [int(m.group(1)) for i in self.images
                   if (m := GENERATED_NAME.match(i.path.name))]
        return max(numbers, default=-1) + 1


def read_record(folder: Path) -> dict:
    try:
        record = json.loads((Path(folder) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _recipe_of(name: str, record: dict) -> dict | None:
    recipe = (record.get("images") or {}).get(name)
    if isinstance(recipe, dict):
        return recipe
    # The record of older versions: one prompt and size for the first `count` images.
    match = GENERATED_NAME.match(name)
    if (match and "class_prompt" in record and "images" not in record
            and int(match.group(1)) < record.get("count", float("inf"))):
        return {k: record[k] for k in ("class_prompt", "resolution") if k in record}
    return None


def list_class_images(folder: Path, wanted: int, recipe: dict | None = None) -> ClassImageSet:
    """The folder's class images, each judged against `recipe` (None: none is judged)."""
    folder = Path(folder)
    files = image_files(folder) if folder.is_dir() else []
    record = read_record(folder)
    images = []
    for path in files:
        made = _recipe_of(path.name, record)
        images.append(ClassImage(path, made, made is None or recipe_matches(made, recipe)))
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
