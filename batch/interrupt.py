"""Ctrl-C in a batch: stop at the next safe point, quietly, leaving only whole files.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be:
inside zarr's bridge to its asyncio loop (a coroutine made but never
scheduled, a task left pending when the loop stops: "coroutine was never
awaited" and "Task was destroyed" noise at exit), or half-way through a
chunk write. :class:`DeferredInterrupt` turns the first SIGINT into a request
instead: it sets :attr:`DeferredInterrupt.requested` (and the batch's cancel
event, so requests in flight are cancelled at the broker), and the batch raises
``KeyboardInterrupt`` itself at the next safe point (between slices, tiles and
chunks: :meth:`DeferredInterrupt.check`), where the temporary files of the
label file being written are removed. A second Ctrl-C raises at once, as
without the handler.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


class DeferredInterrupt:
    """The first SIGINT (while :meth:`installed`) only requests a stop; :meth:`check` acts on it.

    Args:
        also_set: events set with the request (e.g. the cancel event of requests in flight).
    """

    def __init__(self, *also_set: threading.Event) -> None:
        self.requested = threading.Event()
        self._also_set = also_set

    @contextmanager
    def installed(self) -> Iterator[DeferredInterrupt]:
        """Handle SIGINT this way inside the block (only in the main thread; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.requested.is_set():
            raise KeyboardInterrupt
        self.requested.set()
        for event in self._also_set:
            event.set()
        log.warning("interrupt: stopping at the next safe point (Ctrl-C again to stop at once)")

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a stop was requested (call it where stopping loses nothing)."""
        if self.requested.is_set():
            raise KeyboardInterrupt
