"""``protocol.memory.release_free_memory`` gives a thread arena's freed pages back (glibc).

The image encoder frees its temporaries in torch's worker threads; glibc
keeps such memory in the threads' arenas. This reproduces that with plain
Python objects on a thread and checks that RSS falls after the call.
"""

from __future__ import annotations

import platform
import threading

import psutil
import pytest

from protocol.memory import release_free_memory

MIB = 2**20

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's"
)


def test_freed_thread_arena_memory_goes_back_to_the_os() -> None:
    survivors: list[bytearray] = []

    def allocate() -> None:
        blocks = []
        for _ in range(2000):  # 2000 x 60 kB (below the mmap threshold), pinned by small survivors
            blocks.append(bytearray(60_000))
            survivors.append(bytearray(100))
        del blocks

    release_free_memory()
    before = psutil.Process().memory_info().rss
    thread = threading.Thread(target=allocate)
    thread.start()
    thread.join()
    kept = psutil.Process().memory_info().rss - before
    assert release_free_memory() is True
    after = psutil.Process().memory_info().rss - before
    assert len(survivors) == 2000
    assert kept > 50 * MIB, f"the arena kept only {kept / MIB:.0f} MiB; the test no longer reproduces it"
    assert after < kept - 50 * MIB, f"RSS {kept / MIB:.0f} MiB above start before, {after / MIB:.0f} after"
