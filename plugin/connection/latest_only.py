"""Run jobs one at a time on a background thread and deliver only the newest one's result.

A GUI threading helper (no Qt): each request channel of a
:class:`plugin.connection.session.Session`, and the widget's connection attempts, run
through one. A user who clicks faster than the backend answers gets the
answer to the newest click; older answers are dropped, never pasted late.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class LatestOnly(Generic[T]):
    """Run jobs one at a time on a background thread; deliver only the newest.

    ``submit`` never blocks. While a job runs, newer submissions replace
    each other in a single pending slot. When a job finishes, its result is
    delivered only if no newer job was submitted meanwhile; otherwise it is
    dropped (counted in ``superseded``) and the newest pending job starts.
    So at most one request is in flight, and a stale reply is never used.

    Callbacks run on the background thread; GUI code must marshal them.
    """

    def __init__(self, name: str = "latest-only") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._generation = 0
        self._pending: (
            tuple[int, Callable[[], T], Callable[[T], None], Callable[[Exception], None]] | None
        ) = None
        self._running = False
        self._thread: threading.Thread | None = None
        self.superseded = 0
        self.delivered = 0

    def submit(
        self,
        job: Callable[[], T],
        on_result: Callable[[T], None],
        on_error: Callable[[Exception], None] = lambda e: None,
    ) -> int:
        """Queue ``job`` as the newest; return its generation number."""
        with self._lock:
            self._generation += 1
            if self._pending is not None:
                self.superseded += 1
            self._pending = (self._generation, job, on_result, on_error)
            if not self._running:
                self._running = True
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            return self._generation

    def is_current(self, generation: int) -> bool:
        with self._lock:
            return generation == self._generation

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._running

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no job runs or is pending (for tests and shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.busy:
                return True
            time.sleep(0.01)
        return not self.busy

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._pending is None:
                    self._running = False
                    return
                generation, job, on_result, on_error = self._pending
                self._pending = None
            outcome: T | Exception
            try:
                outcome = job()
            except Exception as e:  # delivered to on_error, never lost
                outcome = e
            if not self.is_current(generation):
                with self._lock:
                    self.superseded += 1
                continue
            self.delivered += 1
            try:
                if isinstance(outcome, Exception):
                    on_error(outcome)
                else:
                    on_result(outcome)
            except Exception:
                log.exception("%s: result callback failed", self.name)
