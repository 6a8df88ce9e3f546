"""A clock for logic that takes ``clock: Callable[[], float]`` (monotonic seconds): set ``now`` by hand."""

from __future__ import annotations


class FakeClock:
    """Returns ``now`` (start 1,000 s); tests move it forward."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now
