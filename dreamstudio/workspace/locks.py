"""One edit of a subject's files at a time.

Two request handlers rewriting a subject's manifest at once would lose one of the changes;
renaming a subject while its photos are being cropped would lose the crops.
"""

from __future__ import annotations

import threading

from ..core.files import safe_name


class SubjectLocks:
    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, subject: str) -> threading.Lock:
        # casefold: on Windows and macOS 'Dog' and 'dog' are the same folder.
        key = safe_name(subject).casefold()
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())
