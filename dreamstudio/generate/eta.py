"""Time left of work counted in sampler steps, from when the steps finished (pure)."""

from __future__ import annotations

import time
from collections.abc import Callable


class StepClock:
    """Estimates the time left of `total` sampler steps from the pace so far.

    The pace is measured from the first step reported, not from the start: the model load
    and the prompt encoding before it would otherwise make the first estimates far too
    long. Work between steps (decoding an image, the next grid cell's prompt) falls
    between two marks and so is counted in the pace.
    """

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic):
        self.total = max(int(total), 0)
        self._clock = clock
        self._first: tuple[int, float] | None = None
        self._last: tuple[int, float] | None = None

    def tick(self, done: int) -> float | None:
        """Record that `done` steps in all are finished now; return the seconds left."""
        mark = (done, self._clock())
        if self._first is None:
            self._first = mark
        self._last = mark
        return self.seconds_left

    @property
    def seconds_left(self) -> float | None:
        """None until two different step counts have been seen."""
        if self._first is None or self._last is None or self._last[0] <= self._first[0]:
            return None
        (steps0, t0), (steps1, t1) = self._first, self._last
        pace = (t1 - t0) / (steps1 - steps0)
        return max(0.0, (self.total - steps1) * pace)
