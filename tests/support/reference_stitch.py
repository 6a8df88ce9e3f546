"""A slow, plain stitcher written from the rules in ``protocol/geometry/stitch.py``'s docstring: the oracle
that :class:`~protocol.geometry.stitch.TileStitcher`'s faster bookkeeping is checked against.

It keeps every tile's whole labels, matches each pair of neighbouring windows over their whole overlap
with :func:`protocol.geometry.overlaps.mutual_best_matches`, merges with a dict union-find keyed by
(tile flat index, worker's id), and numbers the objects that own core pixels by the first (tile, id)
that saw them. Coordinates (row, col).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from protocol.geometry.grid import TileGrid
from protocol.geometry.overlaps import mutual_best_matches

Node = tuple[int, int]  # (tile flat index, the worker's id in that tile)


@dataclass(frozen=True)
class ReferenceResult:
    """The labels (uint32 (H, W)) and facts the oracle found; the fields match ``StitchResult``'s."""

    labels: np.ndarray
    num_objects: int
    areas: list[int]
    merges: int
    scores: list[float]


def reference_stitch(
    grid: TileGrid,
    answers: Mapping[int, np.ndarray],
    merge_iou: float,
    scores: Mapping[int, np.ndarray] | None = None,
) -> ReferenceResult:
    """Stitch ``answers`` (tile flat index -> integer labels of its window; tiles may be missing).

    ``scores``: tile flat index -> float (n,) score of the tile's id ``i + 1`` at ``i``.
    """
    parent: dict[Node, Node] = {}

    def root(node: Node) -> Node:
        while parent[node] != node:
            node = parent[node]
        return node

    for flat, labels in answers.items():
        for label_id in np.unique(labels[labels > 0]).tolist():
            parent[(flat, label_id)] = (flat, label_id)
    merges = 0
    for flat in answers:
        tile = grid.tiles[flat]
        for other in grid.neighbours(tile):
            if other.flat <= flat or other.flat not in answers:
                continue
            box = (
                max(tile.window[0], other.window[0]),
                max(tile.window[1], other.window[1]),
                min(tile.window[2], other.window[2]),
                min(tile.window[3], other.window[3]),
            )
            if box[0] >= box[2] or box[1] >= box[3]:
                continue
            mine = _crop(answers[flat], tile.window, box)
            theirs = _crop(answers[other.flat], other.window, box)
            for a, b, _ in mutual_best_matches(mine, theirs, merge_iou):
                merges += 1
                ra, rb = root((flat, a)), root((other.flat, b))
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    # Every node's component is named by its smallest (tile, id): the first that saw it.
    area: dict[Node, int] = {}
    best: dict[Node, float] = {}
    for node in parent:
        top = root(node)
        flat, label_id = node
        tile = grid.tiles[flat]
        core = answers[flat][tile.core_in_window]
        area[top] = area.get(top, 0) + int((core == label_id).sum())
        if scores is not None and flat in scores:
            value = float(scores[flat][label_id - 1])
            best[top] = max(best.get(top, -np.inf), value) if np.isfinite(value) else best.get(top, -np.inf)
    kept = sorted(top for top, pixels in area.items() if pixels > 0)
    number = {top: k + 1 for k, top in enumerate(kept)}
    out = np.zeros(grid.slice_shape, dtype=np.uint32)
    for flat, labels in answers.items():
        tile = grid.tiles[flat]
        core = labels[tile.core_in_window]
        region = out[tile.core_slices]
        for label_id in np.unique(core[core > 0]).tolist():
            region[core == label_id] = number[root((flat, label_id))]
    return ReferenceResult(
        labels=out,
        num_objects=len(kept),
        areas=[area[top] for top in kept],
        merges=merges,
        scores=[best.get(top, -np.inf) for top in kept] if best else [],
    )


Box = tuple[int, int, int, int]


def _crop(labels: np.ndarray, window: Box, box: Box) -> np.ndarray:
    """The part of a window's labels inside ``box`` ([r0, c0, r1, c1) in slice pixels)."""
    return labels[box[0] - window[0] : box[2] - window[0], box[1] - window[1] : box[3] - window[1]]
