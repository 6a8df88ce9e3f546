"""A test's stand-in for napari's GUI thread: what the plugin's jobs dispatch runs here, in order."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable


class Pump:
    """Collects dispatched calls; :meth:`until` runs them until a condition holds."""

    def __init__(self) -> None:
        self.calls: queue.Queue[Callable[[], None]] = queue.Queue()

    def dispatch(self, fn: Callable[[], None]) -> None:
        self.calls.put(fn)

    def until(self, done: Callable[[], bool], timeout_s: float = 120.0) -> None:
        """Run dispatched calls until ``done()``; fails the test after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, "timed out"
            try:
                self.calls.get(timeout=0.05)()
            except queue.Empty:
                pass
