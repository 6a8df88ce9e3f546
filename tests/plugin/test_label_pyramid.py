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


@pytest.mark.parametrize("shape", [(6, 8), (7, 5), (1, 1), (3, 5, 4)])
def test_downsample_max_is_the_largest_of_each_two_by_two_block(shape: tuple[int, ...]) -> None:
    """Pixel (i, j) of the result is the largest of rows 2i, 2i+1 and columns 2j, 2j+1 (edges: what
    exists), counted here one pixel at a time."""
    block = np.random.default_rng(2).integers(0, 1 << 32, shape, dtype=np.uint64).astype(np.uint32)
    found = downsample_max(block)
    *stack, rows, cols = shape
    assert found.shape == (*stack, -(-rows // 2), -(-cols // 2)) and found.dtype == block.dtype
    for index in np.ndindex(*found.shape):
        *at, i, j = index
        assert found[index] == block[(*at, slice(2 * i, 2 * i + 2), slice(2 * j, 2 * j + 2))].max()


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


@pytest.mark.parametrize("shape", [(1500, 1100), (2, 777, 1025)])
def test_writes_with_levels_held_are_carried_down_once_on_exit(shape: tuple[int, ...]) -> None:
    """Inside ``levels_held`` only level 0 changes; on exit every level is in step (odd edges,
    a stack, a nested hold, and a write through another view of the same store meanwhile)."""
    rng = np.random.default_rng(1)
    pyramid = LabelPyramid.create(shape, chunk=64)
    pyramid.write_points(tuple(np.array([0, s - 1]) for s in shape), 9)  # corners, carried at once
    before = [np.asarray(level[:]).copy() for level in pyramid.levels[1:]]
    other = LabelPyramid(pyramid.levels)  # e.g. a click on the GUI thread during a paste
    with pyramid.levels_held():
        for n in range(30):
            starts = [int(rng.integers(0, s)) for s in shape]
            size = [1] * (len(shape) - 2) + [int(rng.integers(1, 150)), int(rng.integers(1, 150))]
            size = [min(n_, s - a) for n_, s, a in zip(size, shape, starts, strict=True)]
            pyramid.write_block(starts, rng.integers(0, 3, size).astype(np.uint32) * (n + 1))
        with pyramid.levels_held():  # nested: carried by the outer one
            pyramid.write_points(tuple(np.array([s // 2]) for s in shape), 77)
        for k, level in enumerate(pyramid.levels[1:]):
            np.testing.assert_array_equal(np.asarray(level[:]), before[k], err_msg=f"level {k + 1} moved")
        other.write_points(tuple(np.array([s - 2]) for s in shape), 55)  # carried down by itself
    assert_in_step(pyramid)
    assert pyramid.values_at(tuple(np.array([s // 2]) for s in shape))[0] == 77


def test_levels_that_do_not_halve_are_refused() -> None:
    with pytest.raises(ValueError, match="do not halve"):
        LabelPyramid([np.zeros((100, 100), np.uint32), np.zeros((40, 50), np.uint32)])


@pytest.mark.parametrize("on_disk", [False, True])
def test_counts_read_only_the_chunks_written(tmp_path, on_disk: bool) -> None:
    """A 100,000² pyramid (in memory or in a folder): only the chunks holding labels are listed and read,
    and the counts (and the highest id) are exact, background included in no count; a stack's
    chunks are found per plane."""
    from plugin.jobs.results import data_max
    from plugin.labels.pyramid import label_snapshot, stored_chunk_boxes
    from plugin.labels.stats import pixel_counts

    pyramid = LabelPyramid.create((100_000, 100_000), str(tmp_path) if on_disk else None)
    level0 = pyramid.levels[0]
    assert stored_chunk_boxes(level0) == [] and pixel_counts(level0) == {} and data_max(level0) == 0
    block = np.zeros((3000, 3000), np.uint32)
    block[10:20, 10:20] = 7  # level-0 chunk (48, 68)
    block[2990:, 2990:] = 9  # chunk (50, 70)
    pyramid.write_block((50_000, 70_000), block)
    pyramid.write_points((np.array([99_999]), np.array([0])), 5)  # the last row's first chunk
    boxes = stored_chunk_boxes(level0)
    assert boxes == [
        (slice(49_152, 50_176), slice(69_632, 70_656)),
        (slice(52_224, 53_248), slice(72_704, 73_728)),
        (slice(99_328, 100_000), slice(0, 1024)),
    ]
    assert pixel_counts(level0) == {7: 100, 9: 100, 5: 1}
    assert data_max(level0) == 9
    # What a whole-layer count reads off the GUI thread: the in-memory snapshot lists the same chunks.
    layer = type("Layer", (), {"multiscale": True, "data": pyramid.levels})()
    assert pixel_counts(label_snapshot(layer)) == {7: 100, 9: 100, 5: 1}
    # A label erased leaves its chunk empty: its count goes, whether or not the chunk stays stored.
    pyramid.write_points((np.array([99_999]), np.array([0])), 0)
    assert pixel_counts(level0) == {7: 100, 9: 100}

    stack = LabelPyramid.create((3, 9000, 9000))
    stack.write_points((np.array([1]), np.array([8999]), np.array([8999])), 4)
    stack.write_points((np.array([2]), np.array([0]), np.array([5000])), 4)
    assert stored_chunk_boxes(stack.levels[0]) == [
        (slice(1, 2), slice(8192, 9000), slice(8192, 9000)),
        (slice(2, 3), slice(0, 1024), slice(4096, 5120)),
    ]
    assert pixel_counts(stack.levels[0]) == {4: 2}


def test_arrays_whose_unwritten_chunks_are_not_background_are_read_whole() -> None:
    """A zarr array with a non-zero fill value (or a numpy array): every pixel is read and counted."""
    import zarr

    from plugin.labels.pyramid import stored_chunk_boxes
    from plugin.labels.stats import pixel_counts

    filled = zarr.create_array(store=zarr.storage.MemoryStore(), shape=(3000, 2000), chunks=(1024, 1024),
                               dtype="uint32", fill_value=3)  # fmt: skip
    filled[0, 0] = 8
    assert stored_chunk_boxes(filled) is None
    assert pixel_counts(filled) == {3: 3000 * 2000 - 1, 8: 1}
    assert stored_chunk_boxes(np.zeros((4, 4), np.uint32)) is None


@pytest.mark.parametrize("layout", ["in a group", "zarr v2"])
def test_stored_chunks_are_found_under_a_path_and_in_a_v2_array(layout: str) -> None:
    """Chunk keys are read from the store (``labels/0/c/0/1``, ``2.2``): metadata keys are no chunks."""
    import zarr

    from plugin.labels.pyramid import stored_chunk_boxes

    kwargs: dict = dict(shape=(3000, 2500), chunks=(1024, 1024), dtype="uint32", fill_value=0)
    if layout == "in a group":
        group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
        array = group.create_array("labels/0", **kwargs)
        group.create_array("labels/1", **kwargs)[0, 0] = 9  # a sibling's chunk is not this array's
    else:
        array = zarr.create_array(store=zarr.storage.MemoryStore(), zarr_format=2, **kwargs)
    array[2999, 2499] = 1
    array[0, 1500] = 2
    assert stored_chunk_boxes(array) == [
        (slice(0, 1024), slice(1024, 2048)),
        (slice(2048, 3000), slice(2048, 2500)),
    ]
