"""The workspace folder: where subjects, their photos, LoRAs and images live on disk.

    <root>/subjects/<name>/originals/     photos as uploaded
    <root>/subjects/<name>/photos/        training crops + manifest.json
    <root>/subjects/<name>/loras/<run>/   pytorch_lora_weights.safetensors + config
    <root>/subjects/<name>/generated/     generated PNGs with their parameters
    <root>/class_images/<key>/            class images, shared by subjects of one class
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .lora_files import is_lora_dir, read_lora_info

_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
             *(f"lpt{i}" for i in range(1, 10))}
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


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
    if len(cleaned.encode("utf-8")) > 120:
        raise InputError(f"The {what} name is too long (at most 120 bytes).")
    return cleaned


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
        return sorted(p.name for p in self.subjects_dir.iterdir() if p.is_dir())

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
