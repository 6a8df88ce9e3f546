"""TileStitcher against a slow, plain oracle (tests/support/reference_stitch.py): the same labels, ids,
areas, merges and scores, in random arrival order, for dense and sparse worker ids and for imperfect
answers (shifted masks, glued and missing objects: IoU below 1, ties, chains over many tiles)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.discs import disc_image, scattered_discs
from protocol.geometry.grid import TileGrid, tile_grid
from protocol.geometry.stitch import MAX_DIRECT_ID, TileStitcher
from tests.support.reference_stitch import reference_stitch

SHAPE = (900, 1000)


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    """Small discs everywhere and a few large ones that span several tiles (uint32 (H, W))."""
    centres, radii = scattered_discs(SHAPE, spacing=30, radius_range=(3.0, 9.0), seed=5)
    _, small = disc_image(SHAPE, centres, radii)
    rows, cols = np.ogrid[: SHAPE[0], : SHAPE[1]]
    top = int(small.max())
    for k, (r, c, rad) in enumerate([(250, 300, 70), (560, 680, 110), (800, 150, 60)]):
        small[(rows - r) ** 2 + (cols - c) ** 2 <= rad**2] = top + k + 1
    return small


def imperfect_answer(truth: np.ndarray, grid: TileGrid, flat: int, rng: np.random.Generator) -> np.ndarray:
    """A tile's answer as an imperfect segmenter gives it: the truth seen 0-2 px off, some objects glued
    to a neighbour id or missing, ids renumbered 1..n in a random order."""
    tile = grid.tiles[flat]
    r0, c0, r1, c1 = tile.window
    dr, dc = rng.integers(-2, 3, 2).tolist()
    padded = np.pad(truth, 2)
    crop = padded[r0 + 2 + dr : r1 + 2 + dr, c0 + 2 + dc : c1 + 2 + dc].copy()
    ids = np.unique(crop[crop > 0])
    lut = np.zeros(int(truth.max()) + 1, dtype=np.uint32)
    lut[ids] = rng.permutation(ids.size) + 1
    lut[ids[rng.random(ids.size) < 0.05]] = 0  # missed
    glued = ids[rng.random(ids.size) < 0.1]
    lut[glued] = lut[np.minimum(glued + 1, lut.size - 1)]  # glued to the next id (maybe a missed one)
    return lut[crop]


def sparse(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same objects with large, unordered ids (above MAX_DIRECT_ID: the stitcher renumbers them)."""
    top = int(labels.max())
    lut = np.zeros(top + 1, dtype=np.uint32)
    lut[1:] = rng.choice(np.arange(MAX_DIRECT_ID + 1, 1 << 31, 7919, dtype=np.uint32), top, replace=False)
    return lut[labels]


@pytest.mark.parametrize("ids", ["dense", "sparse"])
@pytest.mark.parametrize("answers_kind", ["perfect", "imperfect"])
def test_stitcher_gives_exactly_the_labels_of_the_reference(
    truth: np.ndarray, ids: str, answers_kind: str
) -> None:
    grid = tile_grid(SHAPE, tile_size=256, halo=32)
    rng = np.random.default_rng(len(ids) + len(answers_kind))
    answers: dict[int, np.ndarray] = {}
    for tile in grid.tiles:
        if answers_kind == "imperfect":
            labels = imperfect_answer(truth, grid, tile.flat, rng)
        else:
            crop = truth[tile.window_slices]
            found = np.unique(crop[crop > 0])
            lut = np.zeros(int(truth.max()) + 1, dtype=np.uint32)
            lut[found] = rng.permutation(found.size) + 1
            labels = lut[crop]
        answers[tile.flat] = sparse(labels, rng) if ids == "sparse" else labels
    # Scores (concept) need ids 1..n: dense ids only.
    scores = {k: rng.random(int(a.max()) + 1, dtype=np.float32) for k, a in answers.items() if ids == "dense"}
    order = rng.permutation(len(grid)).tolist()
    missing = set(order[-3:]) if answers_kind == "imperfect" else set()  # a cancelled run: tiles missing
    expected = reference_stitch(grid, {k: answers[k] for k in order if k not in missing}, 0.5, scores or None)
    out = np.zeros(SHAPE, dtype=np.uint32)
    stitcher = TileStitcher(out, grid, merge_iou=0.5)
    for k in order:
        if k not in missing:
            given = scores[k][: int(answers[k].max())] if scores else None
            stitcher.add(grid.tiles[k], answers[k], given)
    result = stitcher.finish()
    np.testing.assert_array_equal(out, expected.labels)
    assert result.num_objects == expected.num_objects
    assert result.areas == expected.areas
    assert result.merges == expected.merges > 0
    np.testing.assert_allclose(result.scores, expected.scores)
