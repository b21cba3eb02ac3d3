"""Stop flags for work that runs on a request thread (generating, evaluating).

Each piece of work takes a fresh flag for its kind; `stop(kind)` sets every flag of that
kind, and the work checks its flag between sampler steps. Training has its own cancel in
train/jobs.py, since it runs in a background thread of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class StopFlags:
    def __init__(self):
        self._lock = threading.Lock()
        self._flags: dict[str, set[threading.Event]] = {}

    @contextmanager
    def cancellable(self, kind: str) -> Iterator[threading.Event]:
        """A stop flag for one piece of work of `kind`, set by stop(kind)."""
        event = threading.Event()
        with self._lock:
            self._flags.setdefault(kind, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                self._flags[kind].discard(event)

    def stop(self, kind: str) -> bool:
        """Set every flag of `kind`; False if no work of that kind is going on."""
        with self._lock:
            events = list(self._flags.get(kind, ()))
        for event in events:
            event.set()
        return bool(events)
