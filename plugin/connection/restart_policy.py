"""When to restart a process that died, and when to give up (no Qt, no I/O).

The embedded backend (:class:`plugin.connection.backend.LocalBackend`) restarts its
broker and worker with this policy; ``scripts/start_all.sh`` follows the
same numbers in bash: back-off 1, 2, 4 ... s up to 30 s, at most 5 restarts
within 10 minutes, and a process that stayed up for a minute starts again
from the shortest back-off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_RESTARTS = 5
WINDOW_S = 600.0
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
STABLE_S = 60.0


@dataclass
class RestartPolicy:
    """Back-off and limit for restarting one process.

    Attributes:
        max_restarts: restarts allowed within ``window_s``; one more death means give up.
        window_s: the sliding window, seconds.
        first_delay_s: wait before the first restart, doubled after each one.
        max_delay_s: the longest wait.
        stable_s: a process up this long before dying restarts after ``first_delay_s`` again.
    """

    max_restarts: int = MAX_RESTARTS
    window_s: float = WINDOW_S
    first_delay_s: float = FIRST_DELAY_S
    max_delay_s: float = MAX_DELAY_S
    stable_s: float = STABLE_S
    restart_times: list[float] = field(default_factory=list)
    _next_delay_s: float | None = None

    def on_exit(self, now: float, up_s: float) -> float | None:
        """A death at ``now`` (monotonic s) after ``up_s`` seconds up: seconds to wait, or None to give up."""
        if self._next_delay_s is None or up_s >= self.stable_s:
            self._next_delay_s = self.first_delay_s
        self.restart_times = [t for t in self.restart_times if now - t < self.window_s]
        if len(self.restart_times) >= self.max_restarts:
            return None
        delay = self._next_delay_s
        self._next_delay_s = min(delay * 2, self.max_delay_s)
        return delay

    def on_restart(self, now: float) -> None:
        """The process was started again at ``now``."""
        self.restart_times.append(now)

    @property
    def attempt(self) -> int:
        """The number of the next restart within the window (1-based)."""
        return len(self.restart_times) + 1

    def describe_attempt(self) -> str:
        return f"attempt {self.attempt}/{self.max_restarts}"
