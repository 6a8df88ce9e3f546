"""Where the GUI thread is while the event loop is frozen: stack samples taken only during stalls.

A daemon thread looks at the GUI thread's Python stack (``sys._current_frames``)
every ``every_s`` while the heartbeat (:class:`bench.bench_gui_stall.StallMeter`)
is overdue by more than ``late_s``, and counts each function on the stack once per
sample (inclusive time, like a profiler's cumulative column). Unlike cProfile it
costs nothing between stalls and does not slow the code it watches, so the
phases keep their real timings. Time spent in C without the GIL released (a
numpy call, a GL draw) is charged to the Python frame that called it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = f"{Path(__file__).resolve().parents[1]}/"
OUTER = ("(<module>)", "(_run_module_as_main)", "(_run_code)", "(main)", "(run_phases)", "(phase)")
"""Function names of the frames that hold every phase: not where a stall is."""


class StallSampler:
    """Samples the stack of thread ``thread_id`` while ``last_beat()`` is older than ``late_s``."""

    def __init__(
        self, last_beat: Callable[[], float], thread_id: int, late_s: float = 0.05, every_s: float = 0.005
    ) -> None:
        self.last_beat, self.thread_id, self.late_s, self.every_s = last_beat, thread_id, late_s, every_s
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            if time.perf_counter() - self.last_beat() <= self.late_s:
                continue
            frame = sys._current_frames().get(self.thread_id)
            seen: set[str] = set()
            while frame is not None:
                code = frame.f_code
                seen.add(f"{short_path(code.co_filename)}:{code.co_firstlineno}({code.co_name})")
                frame = frame.f_back
            self.counts.update(seen)
            self.samples += 1

    def take(self) -> tuple[int, Counter[str]]:
        """(samples, per-function counts) since the last call; starts a new tally."""
        samples, counts = self.samples, self.counts
        self.samples, self.counts = 0, Counter()
        return samples, counts

    def report(self, title: str, top: int = 18) -> str:
        """The ``top`` functions by stalled time since the last :meth:`take`, as text (then resets).

        The frames around every phase (runpy, the script's ``main``) are left out.
        """
        samples, counts = self.take()
        counts = Counter({name: n for name, n in counts.items() if not name.endswith(OUTER)})
        sampled = samples * self.every_s
        lines = [f"  where the GUI thread was during stalls of '{title}' ({sampled:.2f} s sampled):"]
        for name, n in counts.most_common(top):
            lines.append(f"    {n * self.every_s:7.2f} s  {name}")
        return "\n".join(lines)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


def short_path(filename: str) -> str:
    """``.../site-packages/napari/x.py`` → ``napari/x.py``; this checkout's files relative to it."""
    for marker in ("site-packages/", REPO):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
