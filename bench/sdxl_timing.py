"""A training process timed from outside: when each step is reported, and its peak memory.

Both sides of the SDXL benchmark are timed this way, so neither trainer's own clock decides
its figure: a step counts as done when the line that reports it (our `dreamstudio step N/M`,
tqdm's `Steps: ... N/M [...]`) reaches this process, and seconds per step are the time
between the reports of two steps divided by the steps between them. Loading and the first
(warm-up) steps fall outside that span, so model loading and one-off set-up count for no one.

Peak memory is read twice: VmHWM (the process's resident high-water mark) when its last
step is reported, i.e. the peak of loading plus training, and the whole run's ru_maxrss from
wait4 when it exits. With `stop_when_trained` the process is ended once its last step is
reported (what comes after, saving and diffusers' final reload of the pipeline, is not
training). A guard ends it early when the machine runs short of memory.
"""

from __future__ import annotations

import codecs
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path


class LowMemoryError(RuntimeError):
    """The run was ended because the machine's available memory fell below the limit."""


@dataclass
class StepTimes:
    """What a timed run saw: seconds since its start at each step's first report."""

    arrivals: dict[int, float] = field(default_factory=dict)
    reports: dict[int, str] = field(default_factory=dict)  # each step's first report line
    peak_rss_training_gib: float | None = None
    peak_rss_process_gib: float = 0.0
    wall_s: float = 0.0
    stopped_after_training: bool = False
    output_tail: list[str] = field(default_factory=list)

    def seconds_per_step(self, first: int, last: int) -> float:
        """Seconds per step from the report of step `first` to that of step `last`."""
        missing = [s for s in (first, last) if s not in self.arrivals]
        if missing:
            seen = sorted(self.arrivals)
            raise RuntimeError(f"step(s) {missing} were never reported (saw {seen}); the "
                               "trainer's output:\n" + "\n".join(self.output_tail[-20:]))
        return (self.arrivals[last] - self.arrivals[first]) / (last - first)


def available_gib() -> float:
    """MemAvailable from /proc/meminfo in GiB (inf where there is none)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def _high_water_gib(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 2**20 if match else None


class _MemoryGuard(threading.Thread):
    def __init__(self, pgid: int, min_free_gib: float):
        super().__init__(daemon=True)
        self.pgid, self.min_free_gib = pgid, min_free_gib
        self.tripped, self.done = False, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            if available_gib() < self.min_free_gib:
                self.tripped = True
                _signal_group(self.pgid, signal.SIGKILL)
                return


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def timed_run(cmd: list[str], env: dict[str, str], step_pattern: str, last_step: int,
              stop_when_trained: bool = True, min_free_gib: float = 3.0,
              cwd: Path | None = None) -> StepTimes:
    """Run `cmd`, timestamping each step report (`step_pattern`'s first group is the step
    number) as it arrives; see the module docstring. Raises if it fails or is stopped."""
    pattern = re.compile(step_pattern)
    times = StepTimes()
    tail: deque[str] = deque(maxlen=60)
    start = time.monotonic()
    # Its own session, so stopping it stops whatever it started too.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=cwd, start_new_session=True)
    guard = _MemoryGuard(proc.pid, min_free_gib)
    guard.start()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    fd = proc.stdout.fileno()
    try:
        while chunk := os.read(fd, 65536):
            now = time.monotonic() - start
            # tqdm redraws with "\r" and ends a line only at the end: split on both, and
            # also read the unfinished last piece (tqdm writes a whole report at once).
            *lines, pending = re.split(r"[\r\n]", pending + decoder.decode(chunk))
            for text in (*lines, pending):
                for match in pattern.finditer(text):
                    times.arrivals.setdefault(int(match.group(1)), now)
                    times.reports.setdefault(int(match.group(1)), text)
            tail.extend(line for line in lines if line.strip())
            if last_step in times.arrivals and times.peak_rss_training_gib is None:
                times.peak_rss_training_gib = _high_water_gib(proc.pid)
                if stop_when_trained:
                    times.stopped_after_training = True
                    _signal_group(proc.pid, signal.SIGTERM)
    finally:
        _, status, usage = os.wait4(proc.pid, 0)
        guard.done.set()
        proc.stdout.close()
    times.wall_s = time.monotonic() - start
    times.peak_rss_process_gib = usage.ru_maxrss / 2**20
    times.output_tail = [*tail, pending] if pending.strip() else list(tail)
    code = os.waitstatus_to_exitcode(status)
    if guard.tripped:
        raise LowMemoryError(
            f"{' '.join(cmd[:3])}... was stopped: under {min_free_gib} GiB of memory was "
            "left on the machine. Close other programs or lower the resolution.")
    if code != 0 and not times.stopped_after_training:
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed (exit {code}):\n"
                           + "\n".join(times.output_tail[-30:]))
    return times
