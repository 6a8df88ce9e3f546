"""glibc ``malloc`` settings that keep a CPU worker's per-click cost steady.

A click on a cached image runs only SAM2's prompt encoder and mask decoder,
whose temporaries are a few MiB each (the upsampled 1024² logits are 4 MiB in
float32). glibc serves an allocation at or above ``M_MMAP_THRESHOLD`` (128 KiB
to start with) with a fresh ``mmap`` and returns it with ``munmap`` on free,
so every such buffer page-faults again at every click. glibc raises that
threshold by itself when a large ``mmap``-ed block is freed — which the image
encoder's 50-100 MiB of temporaries do at a worker's first encode — but a
worker that never runs the encoder (every image found in the disk embedding
cache, :mod:`workers.disk_cache`) keeps the low threshold: measured on 2 CPU
cores, SAM2.1 tiny, 1024², its repeat click took 25-30 ms (20-25 %) longer
than the same click in a worker that had encoded (``bench/RESULTS.md``).

:func:`tune_for_inference` sets at start-up what the first encode would have
left: blocks below 32 MiB come from the heap and are reused, and the heap's
top is given back to the system above 64 MiB of free space. Memory stays
bounded by what a request uses (a freed block is reused by the next request,
not kept per request). Only glibc on Linux; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# glibc's own ceiling for its dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX),
# and twice that for trimming, as glibc sets when it raises the threshold itself.
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES


def tune_for_inference() -> bool:
    """Set glibc's mmap and trim thresholds for a model-serving process; return whether they were set."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if not done:
        log.debug("mallopt refused the thresholds; leaving glibc's defaults")
    return done
