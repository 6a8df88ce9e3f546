"""Hand freed heap memory back to the operating system after large temporary allocations.

Shared by the worker and the broker. The image encoder allocates a few
hundred MiB of temporary tensors per image from many threads, and libzmq's
I/O threads allocate every received message; glibc keeps much of that in
per-thread arenas after it is freed, so RSS creeps up although the live
data does not grow. ``malloc_trim(0)`` returns the free pages
(bench/RESULTS.md: about 120-230 MiB per tiny SAM2 worker on CPU).

The broker also needs the opposite between two trims: glibc returns some
freed message buffers at once, and the next message then faults its pages
in again (``reuse_freed_memory``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable
from typing import Any, cast


def _load_libc() -> ctypes.CDLL | None:
    """The C library on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()


def _glibc_function(name: str, argtypes: list[Any]) -> Callable[..., int] | None:
    """The C library's ``name`` with its argument types set, or None (macOS, Windows, musl without it)."""
    try:
        function = getattr(_LIBC, name)
    except AttributeError:  # no C library loaded, or it lacks the function
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return cast(Callable[..., int], function)


_MALLOC_TRIM = _glibc_function("malloc_trim", [ctypes.c_size_t])
_MALLOPT = _glibc_function("mallopt", [ctypes.c_int, ctypes.c_int])

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
MAX_MMAP_THRESHOLD_BYTES = 32 * 2**20


def reuse_freed_memory() -> bool:
    """Keep freed buffers below 32 MiB for reuse until ``release_free_memory``; whether glibc took it.

    The broker holds a request's frames until the worker's FINAL arrives, so
    two large buffers are freed together; with glibc's own thresholds that
    free space goes straight back to the OS and the next message faults all
    its pages in again (on this VM about 107,000 page faults and twice the
    latency over benchmark 3's 1 MiB round trips; bench/OPTIMISATIONS.md).
    Fixed thresholds keep the pages for the next message; the broker's
    ``release_free_memory`` once per heartbeat after traffic still returns
    them, so RSS stays bounded. Process-wide: call it once at start-up of a
    process that owns its allocator (``python -m broker``), not from a
    library.
    """
    if _MALLOPT is None:
        return False
    mmap_ok = _MALLOPT(_M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD_BYTES)
    trim_ok = _MALLOPT(_M_TRIM_THRESHOLD, 2 * MAX_MMAP_THRESHOLD_BYTES)
    return bool(mmap_ok and trim_ok)


def release_free_memory() -> bool:
    """Return freed heap pages to the OS (glibc only); whether anything was released.

    Takes up to a few milliseconds for a worker's heap, so call it after an
    image-encoder run (seconds) or on a timer, never on the path of a
    cached prompt.
    """
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))
