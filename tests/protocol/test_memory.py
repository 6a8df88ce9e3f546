"""``protocol.runtime.memory``: freed pages go back to the OS on a trim, and are reused between trims (glibc).

The image encoder frees its temporaries in torch's worker threads; glibc
keeps such memory in the threads' arenas. This reproduces that with plain
Python objects on a thread, in a fresh process (a test session's own heap,
with torch and napari loaded, would hide the effect), and checks that RSS
falls after the call; then that ``reuse_freed_memory`` (the broker's
setting) lets the next large message reuse freed pages instead of faulting
them in again, until such a trim.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from tests.support.processes import REPO_ROOT

MIB = 2**20

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's"
)

SCRIPT = """
import json, threading
import psutil
from protocol.runtime.memory import release_free_memory

survivors = []

def allocate():
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
released = release_free_memory()
after = psutil.Process().memory_info().rss - before
print(json.dumps({"kept": kept, "after": after, "released": released, "survivors": len(survivors)}))
"""


def test_freed_thread_arena_memory_goes_back_to_the_os() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    kept, after = result["kept"], result["after"]
    assert result["released"] is True
    assert result["survivors"] == 2000
    assert kept > 50 * MIB, f"the arena kept only {kept / MIB:.0f} MiB; the test no longer reproduces it"
    assert after < kept - 50 * MIB, f"RSS {kept / MIB:.0f} MiB above start before, {after / MIB:.0f} after"


REUSE_SCRIPT = """
import json, resource, sys
import psutil
from protocol.runtime.memory import release_free_memory, reuse_freed_memory

if sys.argv[1] == "reuse":
    assert reuse_freed_memory()

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

per_message = []
for _ in range(20):  # a request held while its reply arrives, then both freed, as in the broker
    before = faults()
    request = bytearray(4 * 2**20)
    reply = bytearray(4 * 2**20)
    del request, reply
    per_message.append(faults() - before)
kept = psutil.Process().memory_info().rss
release_free_memory()
print(json.dumps({"faults": per_message[5:], "released": kept - psutil.Process().memory_info().rss}))
"""


def _faults_per_message(mode: str) -> tuple[list[int], int]:
    """Page faults of each 'message' after a warm-up, and the bytes a trim then gives back."""
    out = subprocess.run(
        [sys.executable, "-c", REUSE_SCRIPT, mode],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["faults"], result["released"]


def test_freed_message_buffers_are_reused_until_the_next_trim() -> None:
    default_faults, _ = _faults_per_message("default")
    reuse_faults, released = _faults_per_message("reuse")
    # glibc's own thresholds give two freed 4 MiB buffers back at once, so
    # every message faults its 2 x 1024 pages of 4 KiB in again...
    assert min(default_faults) > 1000, default_faults
    # ...with reuse_freed_memory() the next message gets the same pages...
    assert max(reuse_faults) < 50, reuse_faults
    # ...and they stay only until release_free_memory() (the broker's heartbeat trim).
    assert released >= 6 * MIB, f"the trim gave back only {released / MIB:.1f} MiB"
