"""The worker's glibc malloc tuning (workers/allocator.py): applied where glibc is, harmless elsewhere."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from workers.allocator import tune_for_inference


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_thresholds_are_set_under_glibc_and_large_blocks_are_then_reused() -> None:
    # In a fresh process: after tuning, a 4 MiB block freed and allocated again comes from the heap
    # (same address range, below the 32 MiB threshold) instead of a fresh mmap each time.
    code = (
        "import ctypes, ctypes.util\n"
        "from workers.allocator import tune_for_inference\n"
        "assert tune_for_inference()\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
        "libc.malloc.restype = ctypes.c_void_p; libc.malloc.argtypes = [ctypes.c_size_t]\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "libc.sbrk.restype = ctypes.c_void_p; libc.sbrk.argtypes = [ctypes.c_long]\n"
        "top = libc.sbrk(0)\n"
        "p = libc.malloc(4 << 20)\n"
        "print('heap' if p < libc.sbrk(0) and libc.sbrk(0) > top else 'mmap')\n"
        "libc.free(p)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "heap", out.stdout + out.stderr


def test_tuning_twice_is_harmless() -> None:
    first = tune_for_inference()
    assert tune_for_inference() == first
