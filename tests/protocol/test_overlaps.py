"""The counting under stitching: compact labels and mutual best matches, against a plain reference.

The stitcher counts overlaps with tables indexed by id (no sort); these tests hold
those tables to a direct computation on random label images, and the stitcher's
output to the same labels whatever ids the worker uses (1..n, or sparse and huge).
"""

from __future__ import annotations

import numpy as np

from bench.discs import disc_image, scattered_discs
from protocol.geometry.grid import tile_grid
from protocol.geometry.overlaps import compact_labels, mutual_best_matches, mutual_best_matches_compact
from protocol.geometry.stitch import TileStitcher


def _reference(a: np.ndarray, b: np.ndarray, min_iou: float) -> list[tuple[int, int, float]]:
    """Mutual best IoU matches, pair by pair (ties to the lower id)."""
    pairs = {}
    for x in np.unique(a[a > 0]):
        for y in np.unique(b[(a == x) & (b > 0)]):
            inter = int(((a == x) & (b == y)).sum())
            pairs[(int(x), int(y))] = inter / int(((a == x) | (b == y)).sum())
    best_a: dict[int, tuple[float, int]] = {}
    best_b: dict[int, tuple[float, int]] = {}
    for (x, y), v in sorted(pairs.items()):
        if v > best_a.get(x, (-1.0, 0))[0]:
            best_a[x] = (v, y)
        if v > best_b.get(y, (-1.0, 0))[0]:
            best_b[y] = (v, x)
    return [(x, y, v) for x, (v, y) in sorted(best_a.items()) if v >= min_iou and best_b[y][1] == x]


def test_mutual_best_matches_equal_a_direct_count_for_small_and_huge_ids() -> None:
    rng = np.random.default_rng(4)
    for _ in range(6):
        a = rng.integers(0, 7, (40, 30)).astype(np.uint32)
        b = np.where(rng.random((40, 30)) < 0.8, a, rng.integers(0, 9, (40, 30))).astype(np.uint32)
        for scale_a, scale_b in [(1, 1), (1, 1_000_003), (999_983, 1)]:
            sa, sb = a * np.uint32(scale_a), b * np.uint32(scale_b)
            expected = _reference(sa, sb, 0.3)
            assert mutual_best_matches(sa, sb, 0.3) == expected
            assert mutual_best_matches_compact(sa, compact_labels(sb), 0.3) == expected


def test_compact_labels_renumber_in_order_and_count() -> None:
    labels = np.array([[0, 7, 7], [300, 0, 7], [5_000_000, 300, 0]], dtype=np.uint32)
    compact = compact_labels(labels)
    assert compact.ids.tolist() == [7, 300, 5_000_000] and compact.areas.tolist() == [3, 2, 1]
    assert compact.small.tolist() == [[0, 1, 1], [2, 0, 1], [3, 2, 0]]
    assert compact.small.dtype == np.uint32  # huge ids take the sorting path
    assert compact_labels(np.array([[0, 2, 9]], np.uint16)).small.dtype == np.uint16


def test_stitching_is_the_same_whatever_ids_the_worker_uses() -> None:
    shape = (2300, 2300)
    centres, radii = scattered_discs(shape, spacing=40, radius_range=(6.0, 12.0), seed=2)
    _, truth = disc_image(shape, centres, radii)
    grid = tile_grid(shape)
    rng = np.random.default_rng(1)
    outputs = []
    for spread in (1, 4099):  # the worker's ids 1..n per tile, or sparse ids up to ~4 million
        out = np.zeros(shape, np.uint32)
        stitcher = TileStitcher(out, grid)
        for flat in rng.permutation(len(grid)):
            tile = grid.tiles[flat]
            window = truth[tile.window_slices]
            _, local = np.unique(window, return_inverse=True)
            stitcher.add(tile, local.reshape(window.shape).astype(np.uint32) * np.uint32(spread))
        result = stitcher.finish()
        assert result.num_objects == len(centres) and sum(result.areas) == int((truth > 0).sum())
        outputs.append(out)
    assert np.array_equal(outputs[0], outputs[1])
    # One id per disc, in row-major order of the first tile that saw it: a relabelling of the truth.
    pairs = np.unique(np.stack([outputs[0][truth > 0], truth[truth > 0]]), axis=1)
    assert pairs.shape[1] == len(centres)
