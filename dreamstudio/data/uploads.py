"""Bringing uploaded photos into a subject's originals folder.

Exact duplicates (same content, whatever the name) are skipped rather than stored twice:
DreamBooth would see such a photo twice as often as the others. Odd file names are
repaired, not refused, so one photo with quotes or a 200-character name does not stop
the upload of the others.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..core.files import file_digest, safe_file_name, unused_path


@dataclass
class Upload:
    added: list[Path] = field(default_factory=list)  # where each new photo was stored
    duplicates: list[str] = field(default_factory=list)  # names of uploads already there

    def warning(self, subject: str) -> str | None:
        """What to tell the person about the duplicates, if there were any."""
        n = len(self.duplicates)
        if not n:
            return None
        return (f"{n} uploaded photo{'s were' if n != 1 else ' was'} already in '{subject}' "
                f"(same file) and not added again: {', '.join(self.duplicates)}.")


def add_photos(originals: Path, files: list[Path]) -> Upload:
    """Copy `files` into `originals`, skipping missing files and exact duplicates."""
    originals = Path(originals)
    originals.mkdir(parents=True, exist_ok=True)
    # Links are not read: one leading out of the folder is refused when preparing, too.
    known = {file_digest(p) for p in originals.iterdir() if p.is_file() and not p.is_symlink()}
    upload = Upload()
    for src in map(Path, files):
        if not src.is_file():
            continue
        digest = file_digest(src)
        if digest in known:
            upload.duplicates.append(src.name)
            continue
        known.add(digest)
        name = safe_file_name(src.name)
        dest = unused_path(originals, Path(name).stem, Path(name).suffix)
        shutil.copyfile(src, dest)
        upload.added.append(dest)
    return upload
