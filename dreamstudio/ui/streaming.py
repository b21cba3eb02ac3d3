"""Running a long call in a worker thread while its handler streams what it reports.

The call's callbacks (progress, previews) fire in the worker; a Gradio generator handler
can only yield from its own thread. Updates travel through a queue, merged so that a page
slower than the sampler gets the newest picture and text, never a backlog.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class UpdateStream:
    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()

    def put(self, update: dict) -> None:
        """Called from the worker: `{component: value}` to show next."""
        self._queue.put(dict(update))

    def run(self, work: Callable[[], T], cancel: threading.Event) -> Generator[dict, None, T]:
        """Yield the updates `work` puts while it runs in a thread; return its result
        (`value = yield from stream.run(...)`), or raise what it raised. If the handler is
        closed early (the page went away), `cancel` is set and the worker waited for."""
        outcome: dict = {}

        def target():
            try:
                outcome["value"] = work()
            except BaseException as exc:  # noqa: BLE001 - raised again in the handler's thread
                outcome["error"] = exc
            finally:
                self._queue.put(_DONE)

        worker = threading.Thread(target=target, name="dreamstudio-generate", daemon=True)
        worker.start()
        try:
            finished = False
            while not finished:
                update = self._queue.get()
                if update is _DONE:
                    break
                while True:  # fold in whatever else is waiting
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is _DONE:
                        finished = True
                        break
                    update.update(more)
                yield update
        finally:
            if worker.is_alive():
                cancel.set()
                worker.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
