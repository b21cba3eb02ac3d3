"""The workspace folder: where subjects, their photos, LoRAs and images live on disk.

    <root>/subjects/<name>/originals/     photos as uploaded
    <root>/subjects/<name>/photos/        training crops + manifest.json
    <root>/subjects/<name>/loras/<run>/   pytorch_lora_weights.safetensors + config
    <root>/subjects/<name>/generated/     generated PNGs (and grids) with their parameters
    <root>/subjects/<name>/evaluations/<lora>-<time>/   fidelity scores and their images
    <root>/subjects/<name>/tunes/<run>/   a run's scored sweep (tune.json/.csv/.png, images)
    <root>/generated/                     images of the base model alone
    <root>/class_images/<key>/            class images, shared by subjects of one class

This module is the one place that knows these paths, both ways: from a subject to its
folders, and from a folder (a run's output_dir, a LoRA) back to its subject.

Nothing else holds state: a restarted app lists the same subjects and LoRAs from these
folders. A subject's LoRA configs name their class-image folder; deleting a subject leaves
class images alone because other subjects of that class reuse them.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..core.files import safe_name
from ..data.manifest import has_manifest
from ..errors import InputError
from ..lora.files import is_lora_dir, lora_weights_path, read_lora_info

# Half-deleted subjects are renamed to this first, so they never show up as a subject.
_TRASH_PREFIX = ".deleting-"


@dataclass
class LoraFacts:
    """What a LoRA's saved record says about its training."""

    instance_prompt: str | None = None
    steps: int | None = None
    rank: int | None = None
    final_loss: float | None = None
    finished_at: str | None = None  # ISO 8601, as the trainer wrote it


@dataclass
class LoraEntry:
    subject: str
    name: str
    path: Path
    info: dict  # the LoRA's dreamstudio_lora.json

    @property
    def label(self) -> str:
        return f"{self.subject} / {self.name}"

    @property
    def facts(self) -> LoraFacts:
        config = self.info.get("config", {})
        return LoraFacts(instance_prompt=config.get("instance_prompt"),
                         steps=config.get("steps"), rank=config.get("rank"),
                         final_loss=self.info.get("final_loss"),
                         finished_at=self.info.get("finished_at"))


class Workspace:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()
        self.subjects_dir.mkdir(parents=True, exist_ok=True)

    @property
    def subjects_dir(self) -> Path:
        return self.root / "subjects"

    def subject_dir(self, subject: str) -> Path:
        path = (self.subjects_dir / safe_name(subject)).resolve()
        if path.parent != self.subjects_dir:  # belt and braces against path tricks
            raise InputError(f"The subject name '{subject}' points outside the workspace.")
        return path

    def originals_dir(self, subject: str) -> Path:
        return self.subject_dir(subject) / "originals"

    def photos_dir(self, subject: str) -> Path:
        return self.subject_dir(subject) / "photos"

    def loras_dir(self, subject: str) -> Path:
        return self.subject_dir(subject) / "loras"

    def generated_dir(self, subject: str | None) -> Path:
        """Where a subject's images (and grids) go; the base model's go to <root>/generated."""
        if subject:
            return self.subject_dir(subject) / "generated"
        return self.root / "generated"

    def evaluations_dir(self, subject: str) -> Path:
        return self.subject_dir(subject) / "evaluations"

    def tunes_dir(self, subject: str, run_name: str) -> Path:
        """A run's sweep: one folder per run, so a rerun or a wider sweep finds its images."""
        return self.subject_dir(subject) / "tunes" / safe_name(run_name, "run")

    def run_dir(self, subject: str, run_name: str) -> Path:
        return self.loras_dir(subject) / safe_name(run_name, "run")

    def prepared_photos_dir(self, subject: str) -> Path:
        """The subject's photos folder, refused while it has no prepared photos."""
        if not self.has_photos(subject):
            raise InputError(
                f"Subject '{subject}' has no prepared photos: press Prepare on the Data tab first."
            )
        return self.photos_dir(subject)

    def has_photos(self, subject: str) -> bool:
        """True once the subject's photos were prepared (its manifest exists)."""
        return has_manifest(self.photos_dir(subject))

    def run_address(self, path: Path) -> tuple[str, str] | None:
        """(subject, run) of a run folder <root>/subjects/<subject>/loras/<run>; None for a
        path that is not one (e.g. a run the command line wrote elsewhere)."""
        try:
            parts = Path(path).resolve().relative_to(self.subjects_dir).parts
        except ValueError:
            return None
        if len(parts) != 3 or parts[1] != "loras":
            return None
        return parts[0], parts[2]

    def uploaded_count(self, subject: str) -> int:
        """How many files were uploaded for the subject (prepared or not)."""
        folder = self.originals_dir(subject)
        return len(list(folder.iterdir())) if folder.is_dir() else 0

    def class_images_dir(self, model: str, class_prompt: str, resolution: int) -> Path:
        """One folder per (base model, class prompt, resolution), reused across subjects.
        The key's short SHA-1 names the folder (not a content digest): changing it would
        orphan every class-image folder made so far."""
        key = f"{model}\n{class_prompt.strip().lower()}\n{resolution}"
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
        slug = re.sub(r"[^a-z0-9]+", "-", class_prompt.lower()).strip("-")[:40] or "class"
        return self.root / "class_images" / f"{slug}-{resolution}-{digest}"

    def subjects(self) -> list[str]:
        return sorted(p.name for p in self.subjects_dir.iterdir()
                      if p.is_dir() and not p.is_symlink() and _usable(p.name))

    def rename_subject(self, old: str, new: str) -> str:
        """Rename a subject's folder (photos, LoRAs, images move with it); returns the new
        name. Refuses a missing subject and a name that is taken."""
        source = self.existing_subject_dir(old)
        new = safe_name(new)
        target = self.subject_dir(new)
        if target == source:
            return new
        taken = [s for s in self.subjects()
                 if s.casefold() == new.casefold() and self.subject_dir(s) != source]
        if taken:
            # casefold: on Windows and macOS 'Dog' and 'dog' are the same folder.
            raise InputError(
                f"There is already a subject called '{taken[0]}'. Choose another name, or "
                f"delete '{taken[0]}' first."
            )
        try:
            os.rename(source, target)
        except OSError as exc:
            raise InputError(
                f"Could not rename subject '{old}' to '{new}' ({exc.strerror or exc}). "
                "Close any program that has its files open and try again."
            ) from None
        return new

    def delete_subject(self, subject: str) -> None:
        """Delete a subject's folder with everything in it (not the shared class images)."""
        folder = self.existing_subject_dir(subject)
        # Renamed first (atomic), so a deletion that fails half-way leaves no half subject
        # in the list; the hidden leftover is removed on the next deletion.
        trash = self.subjects_dir / f"{_TRASH_PREFIX}{secrets.token_hex(4)}"
        try:
            os.rename(folder, trash)
        except OSError as exc:
            raise InputError(
                f"Could not delete subject '{subject}' ({exc.strerror or exc}). "
                "Close any program that has its files open and try again."
            ) from None
        for leftover in self.subjects_dir.glob(f"{_TRASH_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def existing_subject_dir(self, subject: str) -> Path:
        folder = self.subject_dir(subject)
        if not folder.is_dir():
            raise InputError(
                f"There is no subject called '{subject}'. Pick one from the subject list."
            )
        return folder

    def loras(self, subject: str | None = None) -> list[LoraEntry]:
        entries = []
        for name in [subject] if subject else self.subjects():
            folder = self.loras_dir(name)
            if not folder.is_dir():
                continue
            for run in sorted(folder.iterdir()):
                if is_lora_dir(run):
                    entries.append(LoraEntry(name, run.name, run, read_lora_info(run)))
        return entries

    def find_lora(self, label: str) -> LoraEntry | None:
        """The LoRA listed as `label` ('subject / run'), if it still exists."""
        return next((e for e in self.loras() if e.label == label), None)

    def lora_at(self, path: Path | str) -> LoraEntry | None:
        """The workspace LoRA stored in folder `path`, if it is one."""
        path = Path(path).resolve()
        return next((e for e in self.loras() if e.path.resolve() == path), None)

    def newest_lora(self) -> LoraEntry | None:
        """The most recently written LoRA of any subject (None if there is none)."""
        entries = self.loras()
        return max(entries, key=lambda e: lora_weights_path(e.path).stat().st_mtime,
                   default=None)

    def contains(self, path: Path) -> bool:
        return Path(path).resolve().is_relative_to(self.root)


def _usable(name: str) -> bool:
    # Folders a person made by hand with names the app could not address are left out.
    try:
        safe_name(name)
    except InputError:
        return False
    return True
