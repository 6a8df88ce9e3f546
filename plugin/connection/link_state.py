"""Is the backend there? One state per moment, a change only when it differs (issue 23, items 6 and 13).

No Qt, no napari. The dock checks its backend every second or so
(:func:`plugin.connection.backend.probe`, or a full
:func:`plugin.connection.backend.establish` while it has never connected);
each check gives a :class:`plugin.connection.backend.BackendStatus`. A
:class:`LinkTracker` reduces those to a :class:`LinkState` — one of
:data:`STATES`, *since* when, and what is retried meanwhile — and returns
a :class:`LinkChange` only when the state (or the address) differs from the
last one, so the widget notifies and logs once per change, never once per
check, while its status line can still count the attempts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from plugin.connection.probe import BackendStatus

CONNECTED = "connected"
NO_WORKER = "no worker"
"""The broker answers, but no worker of the model (or of any model) is registered."""
NO_BROKER = "no broker"
"""No broker answers at the address (or the embedded backend is down)."""
STATES = (CONNECTED, NO_WORKER, NO_BROKER)


def state_of(status: BackendStatus) -> str:
    """The :data:`STATES` entry a status snapshot stands for."""
    if status.connected:
        return CONNECTED
    return NO_WORKER if status.reachable else NO_BROKER


def clock(time_s: float) -> str:
    """``HH:MM:SS`` local time."""
    return time.strftime("%H:%M:%S", time.localtime(time_s))


@dataclass(frozen=True)
class LinkState:
    """Where the backend stands now.

    Attributes:
        state: one of :data:`STATES`.
        address: the broker frontend checked.
        since_s: wall-clock time (``time.time()``) the state began.
        detail: the status line of the newest check (:meth:`BackendStatus.describe`).
        attempts: checks that found this state (1 at the change).
        was_connected: whether the plugin was connected to this address at some point
            before (then a state other than connected is a *loss*, not a first failure).
    """

    state: str
    address: str
    since_s: float
    detail: str
    attempts: int = 1
    was_connected: bool = False

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    def retrying(self, every_s: float) -> str:
        """What is being retried while not connected ("" when connected)."""
        if self.connected:
            return ""
        what = (
            f"asking the broker at {self.address} for a live worker"
            if self.state == NO_WORKER
            else f"connecting to the broker at {self.address}"
        )
        return f"retrying: {what} every {every_s:g} s (attempt {self.attempts}); or press Reconnect now"

    def line(self, every_s: float, now_s: float | None = None) -> str:
        """The dock's status text: the newest detail, since when, and what is retried."""
        now_s = time.time() if now_s is None else now_s
        for_s = max(0, round(now_s - self.since_s))
        if self.connected:
            return f"{self.detail}\nsince {clock(self.since_s)}"
        head = "Backend lost" if self.was_connected else "Waiting for the backend"
        return f"{head} since {clock(self.since_s)} ({for_s} s): {self.detail}\n{self.retrying(every_s)}"


@dataclass(frozen=True)
class LinkChange:
    """The state moved from ``before`` (None: first check) to ``after``."""

    before: LinkState | None
    after: LinkState

    @property
    def lost(self) -> bool:
        """A connected backend went away (the dock warns; long tasks end)."""
        return self.before is not None and self.before.connected and not self.after.connected

    @property
    def back(self) -> bool:
        """Connected again after a loss or a first failure."""
        return self.after.connected and self.before is not None and not self.before.connected

    def notification(self) -> tuple[str, str] | None:
        """``(severity, message)`` of the one notification for this change (None: a first
        check that found the backend there needs no word)."""
        after = self.after
        if after.connected:
            if self.before is None:
                return None
            word = "is back" if after.was_connected else "connected"
            return "info", f"SAM2 backend {word}: {after.detail}"
        if self.lost:
            return (
                "warning",
                f"SAM2 backend lost: {after.detail}. Your labels are kept; "
                "the plugin reconnects when the backend is back.",
            )
        # a first failure, or from one not-connected state to the other (the broker answers again
        # but has no worker yet, or stopped answering)
        return ("info" if after.state == NO_WORKER and self.before is not None else "warning"), (
            f"SAM2: {after.detail}"
        )


class LinkTracker:
    """Turns successive status snapshots into state changes.

    Args:
        clock: wall-clock source (tests may pass a fake).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.state: LinkState | None = None

    def observe(self, status: BackendStatus) -> LinkChange | None:
        """Record one check; a :class:`LinkChange` when its state or address differs from the last."""
        kind, before = state_of(status), self.state
        same_address = before is not None and before.address == status.address
        was_connected = same_address and before is not None and (before.was_connected or before.connected)
        if before is not None and same_address and before.state == kind:
            self.state = replace(before, detail=status.describe(), attempts=before.attempts + 1)
            return None
        self.state = LinkState(kind, status.address, self._clock(), status.describe(), 1, was_connected)
        return LinkChange(before if same_address else None, self.state)
