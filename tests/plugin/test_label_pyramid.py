"""The label pyramid store (plugin/labels/pyramid.py): exact ids at level 0, display levels in step.

Pure numpy and zarr, no napari: every level is checked against a full
recomputation from level 0 (the block maximum of ``f × f`` level-0 pixels,
f = 2**k) after writes anywhere, including the slide's edges and corners.
"""

from __future__ import annotations

import numpy as np
import pytest

from plugin.labels.pyramid import LabelPyramid, downsample_max, level_shapes, needs_pyramid


def expected_level(level0: np.ndarray, k: int) -> np.ndarray:
    """Level k from level 0 directly: pixel (i, j) = max of level-0 [f·i, f·i+f) × [f·j, f·j+f)."""
    out = level0
    for _ in range(k):
        out = downsample_max(out)
    return out


def assert_in_step(pyramid: LabelPyramid) -> None:
    level0 = pyramid.read(tuple(slice(None) for _ in pyramid.shape))
    for k in range(1, len(pyramid.levels)):
        found = pyramid.read(tuple(slice(None) for _ in pyramid.shape), level=k)
        np.testing.assert_array_equal(found, expected_level(level0, k), err_msg=f"level {k}")


def test_level_shapes_halve_rounding_up_and_keep_stack_axes() -> None:
    assert level_shapes((20000, 20000)) == [(20000, 20000), (10000, 10000), (5000, 5000), (2500, 2500),
                                            (1250, 1250), (625, 625)]  # fmt: skip
    assert level_shapes((3, 2049, 1025)) == [(3, 2049, 1025), (3, 1025, 513), (3, 513, 257)]
    assert needs_pyramid((8193, 8192)) and not needs_pyramid((8192, 8192))
    assert needs_pyramid((2, 10000, 10000)) and not needs_pyramid((100, 1000, 1000))


def test_one_pixel_objects_at_the_corners_show_on_every_level() -> None:
    """A 1-px object at each corner of an odd-sized slide is level-k pixel (r >> k, c >> k) on each level."""
    shape = (4099, 2051)
    pyramid = LabelPyramid.create(shape, chunk=256)
    assert len(pyramid.levels) == 6  # down to 129 x 65, within one 256² chunk
    corners = {1: (0, 0), 2: (0, shape[1] - 1), 3: (shape[0] - 1, 0), 4: (shape[0] - 1, shape[1] - 1)}
    for label_id, (row, col) in corners.items():
        pyramid.write_block((row, col), np.array([[label_id]], dtype=np.uint32))
    for k, level in enumerate(pyramid.levels):
        data = np.asarray(level[:])
        assert np.count_nonzero(data) == 4, f"level {k}"
        for label_id, (row, col) in corners.items():
            assert data[row >> k, col >> k] == label_id, f"label {label_id} on level {k}"
    assert_in_step(pyramid)


def test_writes_keep_every_level_in_step_and_level0_exact() -> None:
    rng = np.random.default_rng(0)
    shape = (1500, 1100)
    pyramid = LabelPyramid.create(shape, chunk=128)
    truth = np.zeros(shape, dtype=np.uint32)
    for _ in range(40):
        r0, c0 = int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))
        h, w = int(rng.integers(1, 200)), int(rng.integers(1, 200))
        h, w = min(h, shape[0] - r0), min(w, shape[1] - c0)
        block = rng.integers(0, 3, (h, w)).astype(np.uint32) * int(rng.integers(1, 1 << 31))
        pyramid.write_block((r0, c0), block)
        truth[r0 : r0 + h, c0 : c0 + w] = block
    np.testing.assert_array_equal(pyramid.read((slice(None), slice(None))), truth)
    assert_in_step(pyramid)
    # erasing brings the display levels back to background where nothing else is
    pyramid.write_block((0, 0), np.zeros(shape, dtype=np.uint32))
    for level in pyramid.levels:
        assert not np.asarray(level[:]).any()


def test_write_points_returns_old_values_and_carries_down() -> None:
    pyramid = LabelPyramid.create((2, 600, 700), chunk=64)
    indices = (np.array([0, 0, 1, 1]), np.array([0, 599, 5, 300]), np.array([0, 699, 7, 650]))
    old = pyramid.write_points(indices, np.array([5, 6, 7, 8]))
    np.testing.assert_array_equal(old, [0, 0, 0, 0])
    np.testing.assert_array_equal(pyramid.values_at(indices), [5, 6, 7, 8])
    old = pyramid.write_points(indices, 0)
    np.testing.assert_array_equal(old, [5, 6, 7, 8])
    assert_in_step(pyramid)


def test_levels_that_do_not_halve_are_refused() -> None:
    with pytest.raises(ValueError, match="do not halve"):
        LabelPyramid([np.zeros((100, 100), np.uint32), np.zeros((40, 50), np.uint32)])
