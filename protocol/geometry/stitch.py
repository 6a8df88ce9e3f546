"""Stitching the tiles of a large slice into one label image, in any arrival order.

Pure numpy, no napari, no network (the runner is ``protocol/ops/tiled.py``).

:class:`TileStitcher` takes each tile's uint32 labels as they arrive, in any
order, and writes them into one output label image:

* a tile writes only its core, so what lands in the output does not depend
  on the order tiles arrive in, and an object inside one core keeps that
  tile's mask;
* every object seen by two neighbouring tiles (8-neighbourhood) is matched
  in the overlap of their windows (the halos): pairs whose IoU there is at
  least ``merge_iou`` and that are each other's best match are merged
  (union-find), so an object cut by a core border gets one label, and a
  two-cell mask in one tile cannot glue two cells of its neighbour together;
* :meth:`TileStitcher.finish` renumbers the objects 1..n (in order of the
  first tile, in row-major order, that saw them) with one pass over the
  output, tile by tile.

The output may be a numpy array, a zarr array or a
:class:`~protocol.geometry.compressed.CompressedPlane` (anything supporting
numpy slicing and assignment), zero-filled; only one tile's region is read or
written at a time. The stitcher keeps each tile's labels blosc2-compressed
only until all its neighbours have arrived, so its memory is bounded by a
few tiles.

All indices are (row, col); bounding boxes [r0, c0, r1, c1) end exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import blosc2
import numpy as np

from protocol.geometry.grid import Tile, TileGrid
from protocol.geometry.overlaps import label_areas, mutual_best_matches, present_labels, remap_ids

DEFAULT_MERGE_IOU = 0.5


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = [0]

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class _Seen:
    """A tile kept (compressed) until all its neighbours have arrived."""

    labels: bytes
    shape: tuple[int, int]
    local_ids: np.ndarray  # sorted local label ids present in the tile (uint32)
    nodes: np.ndarray  # union-find node of each local id (int64)


@dataclass(frozen=True)
class StitchResult:
    """What :meth:`TileStitcher.finish` wrote.

    Attributes:
        num_objects: labels 1..n in the output.
        areas: pixels of label i at ``areas[i - 1]``.
        tiles_done: tiles that were added (fewer than the grid when cancelled).
        merges: pairs of tile objects merged across tile borders.
    """

    num_objects: int
    areas: list[int]
    tiles_done: int
    merges: int


class TileStitcher:
    """Stitches tile labels into one label image, tile by tile, in any order.

    Args:
        out: (H, W) uint32 output, zero-filled (numpy or zarr array, or any
            array-like supporting numpy slicing and assignment). Only the
            current tile's core is read or written.
        grid: the tiles (:func:`tile_grid`).
        merge_iou: IoU in the overlap of two tiles' windows from which two
            objects are one.

    Not thread-safe: call :meth:`add` from one thread.
    """

    def __init__(self, out: Any, grid: TileGrid, *, merge_iou: float = DEFAULT_MERGE_IOU) -> None:
        if tuple(int(s) for s in out.shape) != grid.slice_shape:
            raise ValueError(
                f"output of shape {tuple(out.shape)} does not match the slice {grid.slice_shape}"
            )
        self.out = out
        self.grid = grid
        self.merge_iou = merge_iou
        self._uf = _UnionFind()
        self._node_key: list[tuple[int, int]] = [(-1, -1)]  # node -> (tile flat index, local id)
        self._node_area: list[int] = [0]  # node -> pixels painted in its tile's core
        self._seen: dict[int, _Seen] = {}
        self._done: set[int] = set()
        self.merges = 0

    @property
    def tiles_done(self) -> int:
        return len(self._done)

    def add(self, tile: Tile, labels: np.ndarray) -> None:
        """Write one tile's labels (uint32 (rows, cols) of its window, 0 = background).

        Raises:
            ValueError: wrong shape, a tile added twice, or a tile of another grid.
        """
        if tile.flat >= len(self.grid.tiles) or self.grid.tiles[tile.flat] != tile:
            raise ValueError(f"tile {tile.index} is not part of this grid")
        if tile.flat in self._done:
            raise ValueError(f"tile {tile.index} was already added")
        labels = np.asarray(labels)
        if labels.shape != tile.shape:
            raise ValueError(f"labels of shape {labels.shape} for tile {tile.index} of shape {tile.shape}")
        if labels.dtype.kind not in "ui":
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        labels = labels.astype(np.uint32, copy=False)
        local_ids = present_labels(labels)
        nodes = np.array([self._new_node(tile.flat, int(i)) for i in local_ids], dtype=np.int64)
        # Paint the core with this tile's nodes (provisional ids until finish()).
        core = labels[tile.core_in_window]
        lut_keys = np.concatenate([[0], local_ids]).astype(np.uint32)
        lut_values = np.concatenate([[0], nodes]).astype(np.uint32)
        painted = remap_ids(lut_keys, lut_values, core)
        self.out[tile.core_slices] = painted
        ids, counts = label_areas(painted)
        for node, count in zip(ids.tolist(), counts.tolist(), strict=True):
            self._node_area[node] += int(count)
        # Match against every neighbour already seen.
        for other in self.grid.neighbours(tile):
            seen = self._seen.get(other.flat)
            if seen is not None:
                self._match(tile, labels, local_ids, nodes, other, seen)
        self._done.add(tile.flat)
        chunk = blosc2.compress2(
            np.ascontiguousarray(labels),
            typesize=4,
            clevel=1,
            codec=blosc2.Codec.LZ4,
            filters=[blosc2.Filter.SHUFFLE],
        )
        self._seen[tile.flat] = _Seen(bytes(chunk), labels.shape, local_ids, nodes)
        for t in [tile, *self.grid.neighbours(tile)]:
            if t.flat in self._seen and all(n.flat in self._done for n in self.grid.neighbours(t)):
                del self._seen[t.flat]

    def _new_node(self, flat: int, local_id: int) -> int:
        node = self._uf.add()
        self._node_key.append((flat, local_id))
        self._node_area.append(0)
        return node

    def _match(
        self,
        tile: Tile,
        labels: np.ndarray,
        local_ids: np.ndarray,
        nodes: np.ndarray,
        other: Tile,
        seen: _Seen,
    ) -> None:
        r0, c0 = max(tile.window[0], other.window[0]), max(tile.window[1], other.window[1])
        r1, c1 = min(tile.window[2], other.window[2]), min(tile.window[3], other.window[3])
        if r0 >= r1 or c0 >= c1:
            return
        other_labels = np.empty(seen.shape, dtype=np.uint32)
        blosc2.decompress2(seen.labels, dst=other_labels)
        mine = labels[r0 - tile.window[0] : r1 - tile.window[0], c0 - tile.window[1] : c1 - tile.window[1]]
        theirs = other_labels[
            r0 - other.window[0] : r1 - other.window[0], c0 - other.window[1] : c1 - other.window[1]
        ]
        matches = mutual_best_matches(mine, theirs, self.merge_iou)
        if not matches:
            return
        mine_ids = np.array([a for a, _, _ in matches], dtype=np.uint32)
        their_ids = np.array([b for _, b, _ in matches], dtype=np.uint32)
        nodes_a = remap_ids(local_ids, nodes, mine_ids).tolist()
        nodes_b = remap_ids(seen.local_ids, seen.nodes, their_ids).tolist()
        for node_a, node_b in zip(nodes_a, nodes_b, strict=True):
            self._uf.union(int(node_a), int(node_b))
        self.merges += len(matches)

    def finish(self) -> StitchResult:
        """Renumber the output to labels 1..n (one pass over the added tiles' cores).

        May be called with tiles missing (a cancelled run): what was added is
        kept, consistently numbered.
        """
        n_nodes = len(self._node_key)
        roots = [self._uf.find(x) for x in range(n_nodes)]
        first_key: dict[int, tuple[int, int]] = {}
        area: dict[int, int] = {}
        for node in range(1, n_nodes):
            root = roots[node]
            key = self._node_key[node]
            if root not in first_key or key < first_key[root]:
                first_key[root] = key
            area[root] = area.get(root, 0) + self._node_area[node]
        kept = sorted((r for r in first_key if area[r] > 0), key=lambda r: first_key[r])
        final_of_root = {r: i + 1 for i, r in enumerate(kept)}
        lut = np.zeros(n_nodes, dtype=np.uint32)
        for node in range(1, n_nodes):
            lut[node] = final_of_root.get(roots[node], 0)
        for flat in sorted(self._done):
            tile = self.grid.tiles[flat]
            self.out[tile.core_slices] = lut[np.asarray(self.out[tile.core_slices])]
        return StitchResult(
            num_objects=len(kept),
            areas=[area[r] for r in kept],
            tiles_done=len(self._done),
            merges=self.merges,
        )
