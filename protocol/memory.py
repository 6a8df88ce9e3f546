"""Hand freed heap memory back to the operating system after large temporary allocations.

Shared by the worker and the broker. The image encoder allocates a few
hundred MiB of temporary tensors per image from many threads, and libzmq's
I/O threads allocate every received message; glibc keeps much of that in
per-thread arenas after it is freed, so RSS creeps up although the live
data does not grow. ``malloc_trim(0)`` returns the free pages
(bench/RESULTS.md: about 120-230 MiB per tiny SAM2 worker on CPU).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` or None (macOS, Windows, musl without it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def release_free_memory() -> bool:
    """Return freed heap pages to the OS (glibc only); whether anything was released.

    Takes up to a few milliseconds for a worker's heap, so call it after an
    image-encoder run (seconds) or on a timer, never on the path of a
    cached prompt.
    """
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))
