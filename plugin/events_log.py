"""Recent backend events (connections, errors, request timings) for the events panel.

Pure Python, no Qt: a thread-safe ring buffer. Requests are recorded from
the request threads (:class:`plugin.connection.session.Session`), connection changes
from the GUI; listeners are called on the recording thread, so a widget
must marshal to the GUI thread (:class:`plugin._qt.events_widget.EventsPanel` does).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

CONNECT, DISCONNECT, ERROR, REQUEST = "connect", "disconnect", "error", "request"
KINDS = (CONNECT, DISCONNECT, ERROR, REQUEST)
DEFAULT_CAPACITY = 50


@dataclass(frozen=True)
class BackendEvent:
    """One thing that happened between the plugin and its backend.

    Attributes:
        time_s: wall-clock time (``time.time()``).
        kind: ``connect``, ``disconnect``, ``error`` or ``request``.
        op: the operation (``segment``, ``auto``, ...) or ``""``.
        request_id: the request's id on the wire, ``""`` when unknown.
        duration_ms: how long the request took (None for other events).
        detail: a short text (endpoint, error code and message, ...).
    """

    time_s: float
    kind: str
    op: str = ""
    request_id: str = ""
    duration_ms: float | None = None
    detail: str = ""

    def clock(self) -> str:
        """``HH:MM:SS`` local time."""
        return time.strftime("%H:%M:%S", time.localtime(self.time_s))

    def row(self) -> tuple[str, str, str, str, str, str]:
        """Display cells: time, kind, op, request id (shortened), duration (ms), detail."""
        duration = "" if self.duration_ms is None else f"{self.duration_ms:.0f}"
        return (self.clock(), self.kind, self.op, self.request_id[:8], duration, self.detail)


class EventLog:
    """The last ``capacity`` events, newest first; safe to record from any thread.

    Args:
        capacity: how many events are kept.
        clock: time source (tests may pass a fake).
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], float] = time.time) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._events: deque[BackendEvent] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._clock = clock
        self.listeners: list[Callable[[BackendEvent], None]] = []

    @property
    def capacity(self) -> int:
        return int(self._events.maxlen or 0)

    def record(
        self,
        kind: str,
        op: str = "",
        request_id: str = "",
        duration_ms: float | None = None,
        detail: str = "",
    ) -> BackendEvent:
        """Add an event (kind one of :data:`KINDS`) and tell the listeners."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; one of {KINDS}")
        event = BackendEvent(self._clock(), kind, op, request_id, duration_ms, " ".join(detail.split()))
        with self._lock:
            self._events.append(event)
        for listener in list(self.listeners):
            listener(event)
        return event

    def recent(self) -> list[BackendEvent]:
        """The kept events, newest first."""
        with self._lock:
            return list(reversed(self._events))

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)
