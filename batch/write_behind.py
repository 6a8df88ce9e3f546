"""Window writes into a label file done on a writer thread, off the stitching thread.

The stitcher writes each tile's core on the one thread that numbers and
merges tiles; into a file on disk (:class:`batch.contiguous.ContiguousPixels`)
that is one ``pwrite`` per row, the largest serial cost of a bounded batch.
:class:`WriteBehind` queues the write (the window is copied: the caller may
reuse its array) and returns; one writer thread does the writes in order
(``pwrite`` releases the GIL, so stitching goes on meanwhile). At most
``max_pending`` windows wait, beyond which a write waits for the oldest: the
memory it adds is that many cores (2.25 MiB each for 768² uint32 cores). A
window larger than ``max_window_bytes`` (a stack's linking pass writes bands
of whole rows) is written on the caller's thread once the queue is done, so
the copies queued stay small whatever the image's width.

Any read, :meth:`WriteBehind.flush` and :meth:`WriteBehind.close` wait for
the queued writes first, so a reader sees every write before it; a failed
write raises (its ``OSError``) at the next write, read, flush or close.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

MAX_PENDING = 2
"""Windows queued for the writer thread at most (a third waits for the oldest)."""
MAX_WINDOW_BYTES = 8 << 20
"""Larger windows are not copied and queued but written on the caller's thread."""


class WriteBehind:
    """An array-like whose ``__setitem__`` runs on a writer thread; reads see every earlier write.

    Args:
        array: the array-like written and read (numpy slicing), e.g. a
            :class:`~batch.contiguous.ContiguousPixels`; ``close()`` is passed on if it has one.
        max_pending: writes queued at most.
        max_window_bytes: larger windows are written on the caller's thread (after the queue).
    """

    def __init__(
        self, array: Any, max_pending: int = MAX_PENDING, max_window_bytes: int = MAX_WINDOW_BYTES
    ) -> None:
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self._max_pending = max(1, max_pending)
        self._max_window_bytes = max_window_bytes
        self._pending: deque[Future[None]] = deque()
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix="label-writer")

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._pool is None:
            raise ValueError("write to a closed WriteBehind")
        value = np.asarray(value)
        if value.size * self.dtype.itemsize > self._max_window_bytes:
            self.flush()
            self.array[key] = value
            return
        while len(self._pending) >= self._max_pending:
            self._pending.popleft().result()
        window = np.array(value, dtype=self.dtype, copy=True)
        self._pending.append(self._pool.submit(self.array.__setitem__, key, window))

    def __getitem__(self, key: Any) -> Any:
        self.flush()
        return self.array[key]

    def flush(self) -> None:
        """Wait for every queued write (raises the first that failed)."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Finish the queued writes (raising the first that failed), stop the thread, close the array."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            close = getattr(self.array, "close", None)
            if close is not None:
                close()
