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
  output, tile by tile, or (``relabel=False``) hands back the lookup table
  for whoever reads the output next to apply as it reads (a label file
  written tile by tile: no second write and read of every core);
* a tile may come with one score per object (``concept``): a merged object
  keeps the **highest** score of its pieces (the tile that saw most of it
  usually scores it best; a piece a tile scored low does not pull it down),
  and :attr:`StitchResult.scores` gives each final object's score.

The work per tile is bounded by the halo, not the tile's area, beyond one
copy of the tile's core into the output and one count of its pixels per
label: a tile's objects are numbered as a block of nodes (node = block start
+ the worker's label id, so nothing is done per object in Python), the core
is written with its node numbers (:meth:`finish` maps them through one lookup
table, node -> final id), and only the overlap of the two
windows is kept for a neighbour that has not arrived yet (its ids renumbered
1..n, counted and blosc2-compressed, so matching it later is one ``bincount``),
never the whole tile. :meth:`TileStitcher.prepare`,
the part that reads every pixel of the tile, touches no shared state and may
run on any thread (``protocol.ops.tiled`` runs it in the thread that received
the tile; numpy and blosc2 release the GIL), :meth:`TileStitcher.add_prepared`
then runs on one thread.

The output may be a numpy array, a zarr array or a
:class:`~protocol.geometry.compressed.CompressedPlane` (anything supporting
numpy slicing and assignment), zero-filled; only one tile's region is read or
written at a time. Memory: the overlaps kept for neighbours still to come
(about a row of tiles' halos), and two int64 per merged pair of pieces (joined once in
:meth:`TileStitcher.finish`, a vectorised union-find: no Python per object or merge).

All indices are (row, col); bounding boxes [r0, c0, r1, c1) end exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import blosc2
import numpy as np

from protocol.geometry.grid import Tile, TileGrid
from protocol.geometry.overlaps import (
    CompactLabels,
    compact_labels,
    labelled_pixels,
    mutual_best_pairs_compact,
)

DEFAULT_MERGE_IOU = 0.5


MAX_NODES = 1 << 32
"""Node numbers are written into the uint32 output until :meth:`TileStitcher.finish` maps them."""
MAX_DIRECT_ID = 1 << 16
"""A tile's label ids up to this are used as they come (each tile takes ``max id`` union-find nodes;
``auto`` answers 1..n with n in the hundreds); larger ids are renumbered 1..n first (a sort of the tile)."""


class _Nodes:
    """The objects of all tiles (node 0: background) in growable numpy arrays, and the merges between
    them as arrays of node pairs; :meth:`roots` joins them all at once (no Python per merge)."""

    def __init__(self) -> None:
        self.area = np.zeros(1024, dtype=np.int64)
        self.score = np.full(1024, np.nan, dtype=np.float32)  # NaN: the tile gave no score
        self.count = 1
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []

    def extend(self, n: int) -> int:
        """Add ``n`` nodes; return the node before the first (the block's base)."""
        base = self.count - 1
        need = self.count + n
        if need > MAX_NODES:
            raise ValueError(f"more than {MAX_NODES - 1} tile objects: the stitched labels exceed uint32")
        if need > self.area.size:
            size = max(need, 2 * self.area.size)
            self.area = np.concatenate([self.area, np.zeros(size - self.area.size, np.int64)])
            self.score = np.concatenate([self.score, np.full(size - self.score.size, np.nan, np.float32)])
        self.count = need
        return base

    def merge(self, a: np.ndarray, b: np.ndarray) -> None:
        """Record that nodes ``a[k]`` and ``b[k]`` are one object (int64 (k,) each)."""
        if a.size:
            self._pairs.append((a, b))

    def roots(self) -> np.ndarray:
        """int64 (count,): the smallest node of each node's object.

        Vectorised union-find: every root hooks to the smallest root it is merged with, then
        pointer jumping; repeated until no merged pair has two roots (each round removes at least
        one root; a few rounds in practice).
        """
        roots = np.arange(self.count, dtype=np.int64)
        if not self._pairs:
            return roots
        a = np.concatenate([pair[0] for pair in self._pairs])
        b = np.concatenate([pair[1] for pair in self._pairs])
        while True:
            ra, rb = roots[a], roots[b]
            apart = ra != rb
            if not apart.any():
                return roots
            a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
            np.minimum.at(roots, np.maximum(ra, rb), np.minimum(ra, rb))
            while True:
                up = roots[roots]
                if np.array_equal(up, roots):
                    break
                roots = up


@dataclass
class PreparedTile:
    """A tile's labels with what :meth:`TileStitcher.add_prepared` needs, computed off the stitching thread.

    Attributes:
        tile: the tile.
        labels: uint32 (rows, cols) of its window, ids 1..``top`` (renumbered if the worker's were sparse).
        top: the largest id.
        core_areas: int64 (top + 1,) pixels of each id in the core (index 0, background: 0).
        scores: float32 (top + 1,) score of each id (index 0 unused), or None: the tile gave none.
        bands: neighbour flat index -> that neighbour's overlap (blosc2), for neighbours not
            yet added when prepared.
    """

    tile: Tile
    labels: np.ndarray
    top: int
    core_areas: np.ndarray
    scores: np.ndarray | None = None
    bands: dict[int, _Band] = field(default_factory=dict)


@dataclass(frozen=True)
class _Band:
    """Labels of one tile in the overlap with one neighbour's window, compacted and compressed."""

    data: bytes
    shape: tuple[int, int]
    dtype: np.dtype
    ids: np.ndarray
    areas: np.ndarray

    @classmethod
    def pack(cls, labels: np.ndarray) -> _Band:
        compact = compact_labels(labels)
        chunk = blosc2.compress2(
            np.ascontiguousarray(compact.small),
            typesize=compact.small.dtype.itemsize,
            clevel=1,
            codec=blosc2.Codec.LZ4,
            filters=[blosc2.Filter.SHUFFLE],
        )
        shape = (int(labels.shape[0]), int(labels.shape[1]))
        return cls(bytes(chunk), shape, compact.small.dtype, compact.ids, compact.areas)

    def unpack(self) -> CompactLabels:
        small = np.empty(self.shape, dtype=self.dtype)
        blosc2.decompress2(self.data, dst=small)
        return CompactLabels(self.ids, small, self.areas)


def _overlap(tile: Tile, other: Tile) -> tuple[slice, slice] | None:
    """Index, in ``tile``'s window, of the overlap of the two windows (None: they do not overlap)."""
    r0, c0 = max(tile.window[0], other.window[0]), max(tile.window[1], other.window[1])
    r1, c1 = min(tile.window[2], other.window[2]), min(tile.window[3], other.window[3])
    if r0 >= r1 or c0 >= c1:
        return None
    wr, wc = tile.window[0], tile.window[1]
    return slice(r0 - wr, r1 - wr), slice(c0 - wc, c1 - wc)


@dataclass(frozen=True)
class StitchResult:
    """What :meth:`TileStitcher.finish` wrote.

    Attributes:
        num_objects: labels 1..n in the output.
        areas: pixels of label i at ``areas[i - 1]``.
        tiles_done: tiles that were added (fewer than the grid when cancelled).
        merges: pairs of tile objects merged across tile borders.
        scores: score of label i at ``scores[i - 1]`` (the highest of its pieces), when the
            tiles came with scores; else empty.
        lut: ``finish(relabel=False)`` only: uint32 (nodes,), the final id of each value the
            output holds (``final = lut[out]``; ``lut[0] == 0``); None: the output holds the final ids.
    """

    num_objects: int
    areas: list[int]
    tiles_done: int
    merges: int
    scores: list[float] = field(default_factory=list)
    lut: np.ndarray | None = None


class TileStitcher:
    """Stitches tile labels into one label image, tile by tile, in any order.

    Args:
        out: (H, W) uint32 output, zero-filled (numpy or zarr array, or any
            array-like supporting numpy slicing and assignment). Only the
            current tile's core is read or written.
        grid: the tiles (:func:`tile_grid`).
        merge_iou: IoU in the overlap of two tiles' windows from which two
            objects are one.

    :meth:`prepare` may run on any thread; :meth:`add_prepared` (and :meth:`add`,
    which does both) and :meth:`finish` on one thread.
    """

    def __init__(self, out: Any, grid: TileGrid, *, merge_iou: float = DEFAULT_MERGE_IOU) -> None:
        if tuple(int(s) for s in out.shape) != grid.slice_shape:
            raise ValueError(
                f"output of shape {tuple(out.shape)} does not match the slice {grid.slice_shape}"
            )
        self.out = out
        self.grid = grid
        self.merge_iou = merge_iou
        self._nodes = _Nodes()
        self._blocks: dict[int, tuple[int, int]] = {}  # tile flat -> (base node, top id); node = base + id
        self._waiting: dict[tuple[int, int], _Band] = {}  # (tile, neighbour) -> tile's overlap, kept for it
        self.merges = 0

    @property
    def tiles_done(self) -> int:
        return len(self._blocks)

    def add(self, tile: Tile, labels: np.ndarray, scores: np.ndarray | None = None) -> None:
        """Write one tile's labels (uint32 (rows, cols) of its window, 0 = background).

        Args:
            scores: float (n,) score of the tile's label ``i + 1`` at ``i`` (``concept``), or None.

        Raises:
            ValueError: wrong shape, a tile added twice, or a tile of another grid.
        """
        self.add_prepared(self.prepare(tile, labels, scores))

    def prepare(self, tile: Tile, labels: np.ndarray, scores: np.ndarray | None = None) -> PreparedTile:
        """Check one tile's labels and do its per-pixel work; any thread (it changes nothing shared).

        Args:
            scores: as :meth:`add`.

        Raises:
            ValueError: wrong shape, integer type, a tile of another grid, or scores that do not fit.
        """
        if tile.flat >= len(self.grid.tiles) or self.grid.tiles[tile.flat] != tile:
            raise ValueError(f"tile {tile.index} is not part of this grid")
        labels = np.asarray(labels)
        if labels.shape != tile.shape:
            raise ValueError(f"labels of shape {labels.shape} for tile {tile.index} of shape {tile.shape}")
        if labels.dtype.kind not in "ui":
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        if labels.dtype.kind == "i" and labels.size and int(labels.min()) < 0:
            raise ValueError(f"labels of tile {tile.index} must not be negative")
        labels = labels.astype(np.uint32, copy=False)
        top = int(labels.max(initial=0))
        by_id = None
        if scores is not None:
            by_id = np.full(top + 1, np.nan, dtype=np.float32)
            given = np.asarray(scores, dtype=np.float32).ravel()
            if given.size < top:
                raise ValueError(f"{given.size} scores for tile {tile.index} with labels up to {top}")
            by_id[1:] = given[:top]
        if top > MAX_DIRECT_ID:  # large, sparse ids: renumber 1..n (keeps their order)
            ids, inverse = np.unique(labels, return_inverse=True)
            labels = inverse.reshape(labels.shape).astype(np.uint32) + (0 if ids[0] == 0 else 1)
            top = int(labels.max(initial=0))
            if by_id is not None:
                by_id = np.concatenate([[np.nan], by_id[ids[ids > 0]]]).astype(np.float32)
        core_areas = np.bincount(labelled_pixels(labels[tile.core_in_window])[0], minlength=top + 1)
        core_areas[0] = 0  # background: not counted when mostly background (unused)
        prepared = PreparedTile(tile, labels, top, core_areas, by_id)
        for other in self.grid.neighbours(tile):
            where = _overlap(tile, other)
            if where is not None and other.flat not in self._blocks:
                prepared.bands[other.flat] = _Band.pack(labels[where])
        return prepared

    def add_prepared(self, prepared: PreparedTile) -> None:
        """Number a prepared tile's objects, write its core and match it with its neighbours.

        Raises:
            ValueError: a tile added twice.
        """
        tile, labels, top = prepared.tile, prepared.labels, prepared.top
        if tile.flat in self._blocks:
            raise ValueError(f"tile {tile.index} was already added")
        base = self._nodes.extend(top)
        self._nodes.area[base + 1 : base + top + 1] += prepared.core_areas[1:]
        if prepared.scores is not None:
            self._nodes.score[base + 1 : base + top + 1] = prepared.scores[1:]
        self._blocks[tile.flat] = (base, top)
        core = labels[tile.core_in_window]
        self.out[tile.core_slices] = core + (core > 0) * np.uint32(base)  # node numbers (6x np.where's speed)
        for other in self.grid.neighbours(tile):
            where = _overlap(tile, other)
            if where is None:
                continue
            theirs = self._waiting.pop((other.flat, tile.flat), None)
            if theirs is not None:
                self._match(labels[where], base, theirs.unpack(), self._blocks[other.flat][0])
            elif other.flat not in self._blocks:
                band = prepared.bands.get(other.flat) or _Band.pack(labels[where])
                self._waiting[(tile.flat, other.flat)] = band

    def _match(self, mine: np.ndarray, my_base: int, theirs: CompactLabels, their_base: int) -> None:
        """Merge the objects of two tiles that are each other's best match in their overlap."""
        mine_ids, their_ids, _ = mutual_best_pairs_compact(mine, theirs, self.merge_iou)
        self._nodes.merge(my_base + mine_ids.astype(np.int64), their_base + their_ids.astype(np.int64))
        self.merges += int(mine_ids.size)

    def finish(self, relabel: bool = True) -> StitchResult:
        """Renumber the output to labels 1..n (one pass over the added tiles' cores).

        Args:
            relabel: False: leave the node numbers in the output and return the lookup table
                (:attr:`StitchResult.lut`) for the reader to apply (no pass over the output).

        May be called with tiles missing (a cancelled run): what was added is
        kept, consistently numbered.
        """
        nodes = self._nodes
        roots = nodes.roots()
        # Order of first appearance: (tile flat index, id in the tile) of each node.
        order = np.full(nodes.count, np.iinfo(np.int64).max, dtype=np.int64)
        stride = max((top for _, top in self._blocks.values()), default=0) + 1
        for flat, (base, top) in self._blocks.items():
            order[base + 1 : base + top + 1] = flat * stride + np.arange(1, top + 1)
        first = np.full(nodes.count, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, roots[1:], order[1:])
        area = np.bincount(roots[1:], weights=nodes.area[1 : nodes.count], minlength=nodes.count)
        area = np.rint(area).astype(np.int64)
        kept = np.flatnonzero(area > 0)
        kept = kept[kept != 0]
        kept = kept[np.argsort(first[kept], kind="stable")]
        final = np.zeros(nodes.count, dtype=np.uint32)
        final[kept] = np.arange(1, kept.size + 1, dtype=np.uint32)
        lut = final[roots]  # lut[0] == 0: node 0 is the background
        scores: list[float] = []
        if np.isfinite(nodes.score[1 : nodes.count]).any():
            best = np.full(nodes.count, -np.inf, dtype=np.float32)
            np.fmax.at(best, roots[1:], nodes.score[1 : nodes.count])  # NaN (no score) loses to any score
            scores = [float(v) for v in best[kept]]
        for flat in sorted(self._blocks) if relabel else ():
            tile = self.grid.tiles[flat]
            self.out[tile.core_slices] = lut[np.asarray(self.out[tile.core_slices])]
        return StitchResult(
            num_objects=int(kept.size),
            areas=area[kept].tolist(),
            tiles_done=len(self._blocks),
            merges=self.merges,
            scores=scores,
            lut=None if relabel else lut,
        )
