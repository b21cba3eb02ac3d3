"""Files on disk: the one atomic writer, the one content digest, and safe names.

Every file DreamStudio writes (LoRA weights, kohya files, manifests, settings, PNGs,
crops) goes through `atomic_path`: it is written under a hidden temporary name in the same
folder, flushed to disk and renamed into place, so a reader, a crash or a cancelled run
sees either the old file or the whole new one. The result gets the permissions a plain
`open(path, "w")` would give (0666 less the umask, so usually 0644): LoRAs and images are
opened by other tools and other users of the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError

_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
             *(f"lpt{i}" for i in range(1, 10))}
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]')
MAX_NAME_BYTES = 120
# What atomic_path names its temporaries: `.<stem>.<mkstemp's 8 characters>.tmp<suffix>`.
_TEMPORARY = re.compile(r"^\..*\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")


def file_mode() -> int:
    """The mode a newly created file gets under the current umask."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode a newly created folder gets under the current umask."""
    return 0o777 & ~_umask()


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def is_temporary(path: Path) -> bool:
    """True for a temporary of atomic_path: one left on disk only by a killed process."""
    return bool(_TEMPORARY.match(Path(path).name))


def find_temporaries(folder: Path) -> list[Path]:
    """The temporaries of atomic_path anywhere under `folder`: finished writes leave none,
    so each is one a writer is still at, or one a killed writer left."""
    return [p for p in Path(folder).rglob(".*") if p.is_file() and is_temporary(p)]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it replaces `path`.

    The temporary name keeps the suffix, since some writers (PIL, safetensors) choose the
    format by it. On any error the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                                suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the permissions a normal write would.
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: dict, sort_keys: bool = True) -> Path:
    """JSON for people and other tools: indented, UTF-8, paths and dates as strings."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys, ensure_ascii=False, default=str)
    return atomic_write_text(path, text)


def file_digest(path: Path) -> str:
    """SHA-256 of the file's content as 64 hex digits (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unused_path(folder: Path, stem: str, suffix: str) -> Path:
    """folder/stem+suffix, or the first of stem_1, stem_2, ... not yet taken: nothing on
    disk is ever overwritten by a new file of the same name."""
    path, n = folder / f"{stem}{suffix}", 1
    while path.exists():
        path, n = folder / f"{stem}_{n}{suffix}", n + 1
    return path


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
    if len(cleaned.encode("utf-8")) > MAX_NAME_BYTES:
        raise InputError(
            f"The {what} name is too long (at most {MAX_NAME_BYTES} bytes); "
            "type a shorter one."
        )
    return cleaned


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
    budget = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip() or default
    return stem + suffix
