"""Label windows written off the stitching thread (:mod:`batch.write_behind`): reads see every write,
a failed write is reported, never lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batch.contiguous import ContiguousPixels
from batch.write_behind import WriteBehind


def test_reads_see_every_queued_write_and_a_failed_write_is_raised(tmp_path: Path) -> None:
    store = WriteBehind(ContiguousPixels.create(tmp_path / "labels.u32", (1, 300, 400), np.uint32))
    expected = np.zeros((300, 400), np.uint32)
    window = np.arange(100 * 150, dtype=np.uint32).reshape(100, 150)
    for k, (r, c) in enumerate([(0, 0), (100, 150), (200, 250), (0, 0)]):  # the last overwrites the first
        store[0, r : r + 100, c : c + 150] = window + k
        expected[r : r + 100, c : c + 150] = window + k
        window[:] = 7  # the caller may reuse its array once the write is queued
        window = np.arange(100 * 150, dtype=np.uint32).reshape(100, 150)
    assert np.array_equal(store[0, :, :], expected)
    store.close()
    wide = WriteBehind(
        ContiguousPixels(tmp_path / "labels.u32", 0, (1, 300, 400), np.uint32, False, True), 2, 1024
    )
    wide[0, 0:10, 10:20] = 3  # queued
    wide[0, 100:200, :] = np.full((100, 400), 9, np.uint32)  # 160,000 bytes: written here, after the first
    expected[0:10, 10:20], expected[100:200] = 3, 9
    assert np.array_equal(wide.array[0, :, :], expected)  # the file itself, not through the queue
    wide.close()
    with pytest.raises(ValueError, match="closed"):
        store[0, 0:1, 0:1] = 1

    read_only = ContiguousPixels(tmp_path / "labels.u32", 0, (1, 300, 400), np.uint32, colour=False)
    failing = WriteBehind(read_only)
    failing[0, 0:10, 0:10] = 5  # queued; the writer's pwrite fails (file opened read-only)
    with pytest.raises(OSError):
        failing[0, 0:1, 0:1]
    failing.close()
