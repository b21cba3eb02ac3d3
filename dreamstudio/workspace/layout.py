"""The workspace folder: where subjects, their photos, LoRAs and images live on disk.

    <root>/subjects/<name>/originals/     photos as uploaded
    <root>/subjects/<name>/photos/        training crops + manifest.json
    <root>/subjects/<name>/loras/<run>/   pytorch_lora_weights.safetensors + config
    <root>/subjects/<name>/generated/     generated PNGs with their parameters
    <root>/class_images/<key>/            class images, shared by subjects of one class

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
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..lora.files import is_lora_dir, read_lora_info

_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
             *(f"lpt{i}" for i in range(1, 10))}
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]')
_MAX_NAME_BYTES = 120
# Half-deleted subjects are renamed to this first, so they never show up as a subject.
_TRASH_PREFIX = ".deleting-"


def safe_name(name: str, what: str = "subject") -> str:
    """A folder name for what the user typed; refuses anything that could leave the folder."""
    cleaned = unicodedata.normalize("NFC", (name or "").strip())
    if not cleaned:
        raise InputError(f"The {what} name is empty; type a name such as 'my-dog'.")
    if _UNSAFE.search(cleaned) or cleaned in (".", "..") or cleaned.startswith("."):
        raise InputError(
            f"The {what} name '{name}' cannot be used: names may not contain / \\ : * ? \" < > | "
            "or control characters, nor start with a dot."
        )
    if cleaned.split(".")[0].lower() in _RESERVED:
        raise InputError(f"The {what} name '{name}' is reserved by Windows; choose another.")
    if len(cleaned.encode("utf-8")) > _MAX_NAME_BYTES:
        raise InputError(
            f"The {what} name is too long (at most {_MAX_NAME_BYTES} bytes); "
            "type a shorter one."
        )
    return cleaned


def unused_path(folder: Path, stem: str, suffix: str) -> Path:
    """folder/stem+suffix, or the first of stem_1, stem_2, ... not yet taken: nothing on
    disk is ever overwritten by a new file of the same name."""
    path, n = folder / f"{stem}{suffix}", 1
    while path.exists():
        path, n = folder / f"{stem}_{n}{suffix}", n + 1
    return path


def safe_file_name(name: str, default: str = "photo") -> str:
    """A usable file name made from an uploaded file's name: unlike safe_name it never
    refuses, it repairs (odd characters become "_", long names are shortened keeping the
    suffix), because one oddly named photo must not stop an upload of twenty."""
    cleaned = unicodedata.normalize("NFC", (name or "").replace("\\", "/").split("/")[-1])
    cleaned = _UNSAFE.sub("_", cleaned).strip().lstrip(".").strip()
    stem, dot, suffix = cleaned.rpartition(".")
    if not dot or not stem or len(suffix) > 10:
        stem, suffix = cleaned, ""
    suffix = f".{suffix}" if suffix else ""
    stem = stem or default
    if stem.split(".")[0].lower() in _RESERVED:
        stem = f"_{stem}"
    budget = _MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip() or default
    return stem + suffix


@dataclass
class LoraEntry:
    subject: str
    name: str
    path: Path
    info: dict

    @property
    def label(self) -> str:
        return f"{self.subject} / {self.name}"


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

    def generated_dir(self, subject: str) -> Path:
        return self.subject_dir(subject) / "generated"

    def new_run_dir(self, subject: str, run_name: str) -> Path:
        return self.loras_dir(subject) / safe_name(run_name, "run")

    def class_images_dir(self, model: str, class_prompt: str, resolution: int) -> Path:
        """One folder per (base model, class prompt, resolution), reused across subjects."""
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

    def contains(self, path: Path) -> bool:
        return Path(path).resolve().is_relative_to(self.root)


def _usable(name: str) -> bool:
    # Folders a person made by hand with names the app could not address are left out.
    try:
        safe_name(name)
    except InputError:
        return False
    return True


# ---- Reverse lookups and facts the app asks about (appended for the UI's Studio queries) --

def run_address(workspace: Workspace, path: Path) -> tuple[str, str] | None:
    """(subject, run) of a run folder <root>/subjects/<subject>/loras/<run>; None for a
    path that is not one (e.g. a run the command line wrote elsewhere)."""
    try:
        parts = Path(path).resolve().relative_to(workspace.subjects_dir).parts
    except ValueError:
        return None
    if len(parts) != 3 or parts[1] != "loras":
        return None
    return parts[0], parts[2]


def has_photos(workspace: Workspace, subject: str) -> bool:
    """True when the subject's photos are prepared (its manifest exists): ready to train."""
    # Imported here: the photo pipeline (PIL, face detection) is not needed to list folders.
    from ..data.prepare import MANIFEST_NAME

    return (workspace.photos_dir(subject) / MANIFEST_NAME).is_file()


def uploaded_count(workspace: Workspace, subject: str) -> int:
    """How many files were uploaded for the subject (prepared or not)."""
    folder = workspace.originals_dir(subject)
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def newest_lora(workspace: Workspace) -> LoraEntry | None:
    """The LoRA whose weights were written last, of any subject; None without any."""
    from ..lora.files import WEIGHTS_NAME

    entries = workspace.loras()
    if not entries:
        return None
    return max(entries, key=lambda e: (e.path / WEIGHTS_NAME).stat().st_mtime)


def lora_at(workspace: Workspace, path: Path | str) -> LoraEntry | None:
    """The workspace LoRA stored in folder `path` (as a PNG's parameters name it), if any."""
    wanted = Path(path).resolve()
    return next((e for e in workspace.loras() if e.path.resolve() == wanted), None)


@dataclass
class LoraFacts:
    """What a LoRA's saved run config says about its training."""

    instance_prompt: str | None = None
    steps: int | None = None
    rank: int | None = None
    final_loss: float | None = None
    finished_at: str | None = None  # ISO 8601, as the trainer wrote it


def lora_facts(entry: LoraEntry) -> LoraFacts:
    config = entry.info.get("config", {})
    return LoraFacts(instance_prompt=config.get("instance_prompt"), steps=config.get("steps"),
                     rank=config.get("rank"), final_loss=entry.info.get("final_loss"),
                     finished_at=entry.info.get("finished_at"))
