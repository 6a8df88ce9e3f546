"""How long this worker's requests take, per op: what a draining worker needs to decide honestly.

On SIGTERM a worker has ``drain_grace_s`` before it must be gone (SLURM sends
SIGKILL ``KillWait`` seconds after SIGTERM). Finishing the request it holds is
worth waiting for only if it can end inside what is left of the grace;
otherwise the request should go back to the broker at once, so another worker
starts on it now instead of after the grace (``workers/worker.py``, "Draining").

The compute thread reports each request's start and successful end
(:meth:`RequestDurations.started`, :meth:`RequestDurations.finished`); the
main thread asks :meth:`RequestDurations.running` for the request held and
the time it is expected still to need:

* the op's *typical* duration is an exponential moving average (weight
  :data:`EMA_WEIGHT` on the newest) of this worker's successful requests of
  that op (errors, ``need_image`` answers and cancelled requests are not
  counted: they end early and would make the op look cheaper than it is);
  a request is expected to need ``typical - elapsed`` more: if that is more
  than the grace left, it goes back at once;
* **no estimate** (the op's first successful request since the worker
  started) or a request already running past its typical duration: the time
  still needed is unknown, and the worker keeps the rule it had before it
  kept estimates: it works on through the grace and hands the request back
  at its end if it has not finished. This never throws away work that could
  have finished, and the request is never lost: the grace is fitted inside
  SLURM's ``KillWait`` (``scripts/start_slurm.sh``); the cost is a client
  waiting up to the grace longer, once per op and worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

EMA_WEIGHT = 0.5
"""Weight of the newest duration in an op's typical duration (the rest on the older average)."""


@dataclass(frozen=True)
class Running:
    """The request being computed, as seen at one instant.

    Attributes:
        request_id: its request id (from its header).
        op: its operation.
        elapsed_s: seconds it has been computing.
        remaining_s: seconds it is expected still to need, or None when unknown (see the module
            docstring).
        typical_s: the op's typical duration, or None when there is no estimate yet.
    """

    request_id: str
    op: str
    elapsed_s: float
    remaining_s: float | None
    typical_s: float | None

    def describe(self) -> str:
        """One log phrase: what it has run, what it is expected to need and why."""
        ran = f"request_id={self.request_id} op={self.op} has run {self.elapsed_s:.1f} s"
        if self.typical_s is None:
            return f"{ran}; no estimate yet for this op"
        if self.remaining_s is None:
            return f"{ran}, past its typical {self.typical_s:.1f} s"
        return f"{ran} of a typical {self.typical_s:.1f} s: {self.remaining_s:.1f} s more expected"


class RequestDurations:
    """Per-op typical durations and the request being computed; safe across the worker's two threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._typical_s: dict[str, float] = {}
        self._current: tuple[str, str, float] | None = None

    def started(self, request_id: str, op: str) -> None:
        """The compute thread started ``request_id`` (operation ``op``)."""
        with self._lock:
            self._current = (request_id, op, self._clock())

    def finished(self, succeeded: bool) -> None:
        """The request started last ended; a successful one updates its op's typical duration."""
        with self._lock:
            if self._current is None:
                return
            _request_id, op, started_s = self._current
            self._current = None
            if not succeeded:
                return
            seconds = self._clock() - started_s
            previous = self._typical_s.get(op)
            self._typical_s[op] = (
                seconds if previous is None else EMA_WEIGHT * seconds + (1.0 - EMA_WEIGHT) * previous
            )

    def typical_s(self, op: str) -> float | None:
        """The op's typical duration in seconds, or None before its first successful request."""
        with self._lock:
            return self._typical_s.get(op)

    def running(self) -> Running | None:
        """The request being computed now and its expected remaining time; None when none is."""
        with self._lock:
            if self._current is None:
                return None
            request_id, op, started_s = self._current
            typical = self._typical_s.get(op)
        elapsed = max(0.0, self._clock() - started_s)
        remaining = typical - elapsed if typical is not None and elapsed < typical else None
        return Running(request_id, op, elapsed, remaining, typical)
