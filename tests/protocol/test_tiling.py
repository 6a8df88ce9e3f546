"""Tiles, stitching and slice linking (protocol/geometry/), without a network.

Each tile's labels are what a perfect segmenter would answer for that tile's
window (the true labels cropped to it, renumbered per tile), so every
difference from the truth is the stitcher's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import zarr
from scipy import ndimage

from bench.discs import disc_image, scattered_discs
from protocol.geometry.compressed import CompressedPlane
from protocol.geometry.grid import TileGrid, tile_grid
from protocol.geometry.link import PlaneView, StackLinker, link_slice
from protocol.geometry.stitch import StitchResult, TileStitcher


def stitch_tiles(out: Any, grid: TileGrid, tile_labels: Sequence[np.ndarray]) -> StitchResult:
    """Stitch all tiles at once (``tile_labels[k]`` belongs to ``grid.tiles[k]``), in grid order."""
    stitcher = TileStitcher(out, grid)
    for tile, labels in zip(grid.tiles, tile_labels, strict=True):
        stitcher.add(tile, labels)
    return stitcher.finish()


def tile_answer(truth: np.ndarray, window: tuple[int, int, int, int], seed: int) -> np.ndarray:
    """The truth seen through a tile window, with ids renumbered as a worker would (shuffled)."""
    crop = truth[window[0] : window[2], window[1] : window[3]]
    ids = np.unique(crop[crop > 0])
    new_ids = np.random.default_rng(seed).permutation(len(ids)) + 1
    lut = np.zeros(int(truth.max()) + 1, dtype=np.uint32)
    lut[ids] = new_ids
    return lut[crop]


def assert_same_objects(stitched: np.ndarray, truth: np.ndarray) -> None:
    """Every true object is exactly one stitched label and vice versa (same pixels)."""
    pairs = set(zip(truth[truth > 0].tolist(), stitched[truth > 0].tolist(), strict=True))
    assert (stitched[truth == 0] == 0).all()
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}) == int(truth.max())


def test_tiles_have_the_model_size_and_cores_partition_the_slice() -> None:
    grid = tile_grid((3000, 2100), tile_size=1024, halo=128)
    owner = np.zeros((3000, 2100), dtype=np.int32)
    for tile in grid.tiles:
        assert tile.shape[0] <= 1024 and tile.shape[1] <= 1024
        assert tile.shape == (1024, 1024)  # widened to the model's input where the slice allows
        r0, c0, r1, c1 = tile.window
        assert r0 <= tile.core[0] and tile.core[2] <= r1 and c0 <= tile.core[1] and tile.core[3] <= c1
        owner[tile.core_slices] += 1
    assert (owner == 1).all()
    # Every inner core border has at least the halo of context on both sides.
    for tile in grid.tiles:
        if tile.core[0] > 0:
            assert tile.core[0] - tile.window[0] >= 128
        if tile.core[3] < 2100:
            assert tile.window[3] - tile.core[3] >= 128
    assert len(tile_grid((1000, 700)).tiles) == 1
    with pytest.raises(ValueError, match="halo"):
        tile_grid((3000, 3000), tile_size=256, halo=128)


@pytest.mark.parametrize("radius", [(6.0, 10.0), (30.0, 60.0)])
def test_stitching_gives_every_object_once_whole_in_any_order(radius: tuple[float, float]) -> None:
    """Discs straddling tile borders (and large ones cut by tile windows) come back once, whole."""
    shape = (2500, 2300)
    centres, radii = scattered_discs(shape, spacing=int(radius[1] * 3 + 20), radius_range=radius, seed=1)
    _, truth = disc_image(shape, centres, radii)
    grid = tile_grid(
        shape, tile_size=512, halo=64
    )  # small tiles: many borders, some discs wider than the halo
    answers = [tile_answer(truth, t.window, seed=t.flat) for t in grid.tiles]
    results = []
    for order_seed in (0, 1):
        out = np.zeros(shape, dtype=np.uint32)
        stitcher = TileStitcher(out, grid)
        for k in np.random.default_rng(order_seed).permutation(len(grid)):
            stitcher.add(grid.tiles[k], answers[k])
        result = stitcher.finish()
        assert result.num_objects == int(truth.max()) and result.tiles_done == len(grid)
        assert_same_objects(out, truth)
        assert sorted(result.areas) == sorted(np.bincount(truth.ravel())[1:].tolist())
        results.append(out)
    # Labels are numbered the same whatever order tiles arrived in.
    np.testing.assert_array_equal(results[0], results[1])
    # finish(relabel=False) leaves the output for its reader to map: the same labels, through the lut.
    deferred = np.zeros(shape, dtype=np.uint32)
    stitcher = TileStitcher(deferred, grid)
    for k in np.random.default_rng(2).permutation(len(grid)):
        stitcher.add(grid.tiles[k], answers[k])
    result = stitcher.finish(relabel=False)
    assert result.lut is not None and result.lut.dtype == np.uint32 and result.lut[0] == 0
    assert result.num_objects == int(truth.max())
    np.testing.assert_array_equal(result.lut[deferred], results[0])


def test_a_two_object_mask_in_one_tile_does_not_glue_its_neighbours_objects() -> None:
    shape = (1000, 1600)
    truth = np.zeros(shape, dtype=np.uint32)
    truth[400:420, 690:730] = 1
    truth[430:450, 690:730] = 2
    grid = tile_grid(shape, tile_size=1024, halo=128)
    assert len(grid) == 2 and grid.tiles[0].core[3] > 730 and grid.tiles[1].window[1] < 690
    answers = [tile_answer(truth, t.window, seed=0) for t in grid.tiles]
    # The right tile sees both objects in its halo as one (as SAM might with little context).
    right = answers[1]
    right[right > 0] = 1
    out = np.zeros(shape, dtype=np.uint32)
    result = stitch_tiles(out, grid, answers)
    assert result.num_objects == 2
    assert_same_objects(out, truth)


def test_stitching_into_zarr_touches_only_one_tile_at_a_time() -> None:
    shape = (2100, 2100)
    centres, radii = scattered_discs(shape, spacing=50, seed=3)
    _, truth = disc_image(shape, centres, radii)
    grid = tile_grid(shape, tile_size=1024, halo=128)
    store = zarr.zeros(shape, chunks=(512, 512), dtype=np.uint32)
    written: list[tuple[int, int]] = []

    class Recording:
        """A zarr array that records the size of every region written or read."""

        shape = store.shape

        def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
            written.append((key[0].stop - key[0].start, key[1].stop - key[1].start))
            return np.asarray(store[key])

        def __setitem__(self, key: tuple[slice, slice], value: np.ndarray) -> None:
            written.append(value.shape)
            store[key] = value

    result = stitch_tiles(Recording(), grid, [tile_answer(truth, t.window, t.flat) for t in grid.tiles])
    assert max(r * c for r, c in written) <= 1024 * 1024
    assert result.num_objects == int(truth.max())
    assert_same_objects(np.asarray(store[:]), truth)


def test_stitching_into_a_compressed_plane_gives_the_same_labels_in_a_fraction_of_the_memory() -> None:
    shape = (2100, 2100)
    centres, radii = scattered_discs(shape, spacing=50, seed=3)
    _, truth = disc_image(shape, centres, radii)
    grid = tile_grid(shape, tile_size=1024, halo=128)
    answers = [tile_answer(truth, t.window, t.flat) for t in grid.tiles]
    dense = np.zeros(shape, dtype=np.uint32)
    expected = stitch_tiles(dense, grid, answers)
    plane = CompressedPlane(shape)
    result = stitch_tiles(plane, grid, answers)
    assert result == expected
    assert plane.rectangles == sorted(t.core for t in grid.tiles)  # the cores, nothing else
    np.testing.assert_array_equal(plane[0:2100, 0:2100], dense)
    np.testing.assert_array_equal(plane[500:1700, 3:2001], dense[500:1700, 3:2001])  # across cores
    assert plane.nbytes_stored < dense.nbytes / 20
    with pytest.raises(ValueError, match="partly overlaps"):
        plane[10:20, 10:20] = 1
    with pytest.raises(TypeError, match="two slices"):
        plane[5]


def test_stitcher_refuses_wrong_tiles_clearly() -> None:
    grid = tile_grid((2000, 2000))
    stitcher = TileStitcher(np.zeros((2000, 2000), dtype=np.uint32), grid)
    with pytest.raises(ValueError, match="shape"):
        stitcher.add(grid.tiles[0], np.zeros((10, 10), dtype=np.uint32))
    stitcher.add(grid.tiles[0], np.zeros(grid.tiles[0].shape, dtype=np.uint32))
    with pytest.raises(ValueError, match="already"):
        stitcher.add(grid.tiles[0], np.zeros(grid.tiles[0].shape, dtype=np.uint32))
    with pytest.raises(ValueError, match="does not match"):
        TileStitcher(np.zeros((10, 10), dtype=np.uint32), grid)
    # A cancelled run (tiles missing) still finishes with consistent labels.
    assert stitcher.finish().tiles_done == 1


def moving_discs(frames: int, shape: tuple[int, int]) -> np.ndarray:
    """(Z, H, W) labels: three discs drifting slowly, a fourth appearing at z = 2; ids shuffled per slice."""
    stack = np.zeros((frames, *shape), dtype=np.uint32)
    for z in range(frames):
        centres = np.array([[50 + 3 * z, 50], [150, 60 + 2 * z], [100, 200 - 3 * z], [200, 200]], float)
        radii = np.array([20.0, 15.0, 25.0, 18.0 if z >= 2 else 0.0])
        _, labels = disc_image(shape, centres, radii)
        perm = np.random.default_rng(z).permutation(4) + 7  # arbitrary per-slice ids
        lut = np.concatenate([[0], perm]).astype(np.uint32)
        stack[z] = lut[labels]
    return stack


def test_linked_stacks_keep_one_id_per_object_through_z() -> None:
    stack = moving_discs(5, (256, 256))
    out = zarr.zeros(stack.shape, chunks=(1, 128, 128), dtype=np.uint32)
    linker = StackLinker(link=True, band_rows=100)
    for z in range(len(stack)):
        linker.add(stack[z], PlaneView(out, z))
    linked = np.asarray(out[:])
    # The object at (50 + 3z, 50) has one id on every slice, and each id one object per slice.
    ids = [int(linked[z, 50 + 3 * z, 50]) for z in range(5)]
    assert len(set(ids)) == 1
    assert {int(linked[z, 200, 200]) for z in range(2, 5)} == {4}  # the newcomer gets the next id
    assert linker.next_id == 5
    for z in range(5):
        assert len(np.unique(linked[z])) == len(np.unique(stack[z]))
        pairs = set(zip(stack[z].ravel().tolist(), linked[z].ravel().tolist(), strict=True))
        assert len(pairs) == len(np.unique(stack[z]))  # one-to-one: relabelled, never merged or split


def test_per_slice_ids_when_linking_is_off() -> None:
    stack = moving_discs(3, (256, 256))
    out = np.zeros_like(stack)
    linker = StackLinker(link=False)
    for z in range(3):
        linker.add(stack[z], out[z])
    np.testing.assert_array_equal(out, stack)


def test_link_slice_is_one_to_one_and_respects_the_threshold() -> None:
    prev = np.zeros((100, 100), dtype=np.uint32)
    prev[10:50, 10:50] = 1
    cur = np.zeros((100, 100), dtype=np.uint32)
    cur[10:50, 10:30] = 5  # half of object 1: IoU 0.5
    cur[10:50, 30:50] = 6  # the other half: IoU 0.5, same IoU, lower priority by id
    cur[80:90, 80:90] = 7  # new
    out = np.zeros_like(cur)
    next_id = link_slice(prev, cur, out, next_id=2, iou_threshold=0.5)
    assert out[20, 20] == 1 and out[20, 40] == 2 and out[85, 85] == 3 and next_id == 4
    strict = np.zeros_like(cur)
    link_slice(prev, cur, strict, next_id=2, iou_threshold=0.6)
    assert strict[20, 20] != 1
    assert ndimage.label(out > 0)[1] == 2


def test_scores_follow_their_objects_to_the_linked_ids() -> None:
    """A slice's per-object scores (slice id ``i`` at ``i - 1``) are keyed by the ids linking gave."""
    first = np.zeros((60, 60), dtype=np.uint32)
    first[5:25, 5:25], first[35:55, 35:55] = 1, 2
    second = np.zeros_like(first)
    second[35:55, 35:55], second[5:15, 40:50], second[6:24, 6:24] = 1, 2, 3  # 1 continues 2, 3 continues 1
    for link, expected in ((True, {2: 0.7, 3: 0.8, 1: 0.9}), (False, {1: 0.7, 2: 0.8, 3: 0.9})):
        linker = StackLinker(link=link)
        linker.add(first.copy(), first.copy())
        assert linker.final_scores([0.5, 0.6]) == {1: 0.5, 2: 0.6}
        plane = second.copy()
        linker.add(plane, plane)
        assert linker.final_scores(np.array([0.7, 0.8, 0.9], dtype=np.float32)) == pytest.approx(expected)
        for label_id in expected:  # each score's id is where its object is now
            assert label_id in plane


def test_a_merged_object_keeps_the_highest_score_of_its_pieces() -> None:
    """``concept`` tiles come with a score per object: stitching keeps each final object's score,
    the highest of the pieces merged into it, and numbers scores like the labels."""
    shape = (1000, 1600)
    truth = np.zeros(shape, dtype=np.uint32)
    truth[100:140, 100:140] = 1  # inside the left tile's core only
    truth[500:540, 760:840] = 2  # cut by the tiles' core border: seen by both
    truth[800:840, 1400:1440] = 3  # inside the right tile only
    grid = tile_grid(shape, tile_size=1024, halo=128)
    assert len(grid) == 2
    stitcher = TileStitcher(np.zeros(shape, dtype=np.uint32), grid)
    pieces = {0: {1: 0.9, 2: 0.55}, 1: {2: 0.8, 3: 0.6}}  # tile -> true id -> its score there
    for tile in grid.tiles:
        labels = tile_answer(truth, tile.window, seed=tile.flat)
        scores = np.zeros(int(labels.max()), dtype=np.float32)
        crop = truth[tile.window_slices]
        for true_id, score in pieces[tile.flat].items():
            scores[int(labels[crop == true_id][0]) - 1] = score
        stitcher.add(tile, labels, scores)
    result = stitcher.finish()
    assert result.num_objects == 3
    out = stitcher.out
    by_truth = {t: result.scores[int(out[truth == t][0]) - 1] for t in (1, 2, 3)}
    assert by_truth == pytest.approx({1: 0.9, 2: 0.8, 3: 0.6})
    plain = stitch_tiles(
        np.zeros(shape, dtype=np.uint32), grid, [tile_answer(truth, t.window, 0) for t in grid.tiles]
    )
    assert plain.scores == []  # ``auto`` tiles carry no scores
    with pytest.raises(ValueError, match="scores for tile"):
        TileStitcher(np.zeros(shape, dtype=np.uint32), grid).add(grid.tiles[0], labels, np.zeros(0))
