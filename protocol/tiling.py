"""Tiles of a large slice for automatic segmentation, stitching, and linking slices of a stack.

Pure numpy, no napari, no network (the runner is ``protocol/tiled_auto.py``).

**Tiles.** :func:`tile_grid` cuts an (H, W) slice into tiles of at most
``tile_size`` px (the model's input, so each is seen at native resolution).
Each tile *owns* a core; the cores partition the slice exactly. Its window
is the core plus ``halo`` px on every side that is not the slice's border,
widened to ``tile_size`` where the slice allows (more context, same cost).

**Stitching.** :class:`TileStitcher` takes each tile's uint32 labels as they
arrive, in any order, and writes them into one output label image:

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

The output may be a numpy array or a zarr array (anything supporting numpy
slicing and assignment), zero-filled; only one tile's region is read or
written at a time. The stitcher keeps each tile's labels blosc2-compressed
only until all its neighbours have arrived, so its memory is bounded by a
few tiles.

**Stacks.** :func:`link_slice` relabels slice z+1 so an object that overlaps
an object of slice z with IoU >= ``iou_threshold`` keeps its id (greedy by
IoU, one-to-one); :class:`StackLinker` carries the next free id through a
stack and can keep per-slice ids instead. Both work band by band on
array-likes (:class:`PlaneView` views one plane of a 3D zarr array lazily).

All indices are (row, col); bounding boxes [r0, c0, r1, c1) end exclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import blosc2
import numpy as np

DEFAULT_TILE_SIZE = 1024
DEFAULT_HALO = 128
DEFAULT_MERGE_IOU = 0.5
DEFAULT_LINK_IOU = 0.5
DEFAULT_BAND_ROWS = 1024


@dataclass(frozen=True)
class Tile:
    """One tile of a slice.

    Attributes:
        index: (tile_row, tile_col) in the grid.
        flat: row-major number of the tile (0 .. rows*cols - 1).
        window: [r0, c0, r1, c1) of the pixels sent, in slice pixels.
        core: [r0, c0, r1, c1) of the pixels this tile owns (inside ``window``).
    """

    index: tuple[int, int]
    flat: int
    window: tuple[int, int, int, int]
    core: tuple[int, int, int, int]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the window."""
        return self.window[2] - self.window[0], self.window[3] - self.window[1]

    @property
    def window_slices(self) -> tuple[slice, slice]:
        """Index of the window in the slice: ``source[tile.window_slices]``."""
        return slice(self.window[0], self.window[2]), slice(self.window[1], self.window[3])

    @property
    def core_slices(self) -> tuple[slice, slice]:
        """Index of the core in the slice."""
        return slice(self.core[0], self.core[2]), slice(self.core[1], self.core[3])

    @property
    def core_in_window(self) -> tuple[slice, slice]:
        """Index of the core in the tile's own labels."""
        r0, c0 = self.window[0], self.window[1]
        return (
            slice(self.core[0] - r0, self.core[2] - r0),
            slice(self.core[1] - c0, self.core[3] - c0),
        )


@dataclass(frozen=True)
class TileGrid:
    """The tiles of a slice of ``slice_shape`` (H, W), row-major in ``tiles``."""

    slice_shape: tuple[int, int]
    grid_shape: tuple[int, int]
    tiles: tuple[Tile, ...]
    tile_size: int
    halo: int

    def __len__(self) -> int:
        return len(self.tiles)

    def neighbours(self, tile: Tile) -> list[Tile]:
        """The up to 8 tiles around ``tile``."""
        rows, cols = self.grid_shape
        i, j = tile.index
        return [
            self.tiles[a * cols + b]
            for a in range(max(0, i - 1), min(rows, i + 2))
            for b in range(max(0, j - 1), min(cols, j + 2))
            if (a, b) != (i, j)
        ]


def _axis_parts(length: int, tile_size: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(window0, window1, core0, core1) along one axis."""
    if length <= tile_size:
        return [(0, length, 0, length)]
    # The fewest equal cores whose windows (core + halo inside the slice) fit in tile_size;
    # the first and last cores need a halo on one side only.
    n = max(2, math.ceil((length - 2 * halo) / (tile_size - 2 * halo)))
    while True:
        bounds = [(k * length) // n for k in range(n + 1)]
        spans = [min(length, bounds[k + 1] + halo) - max(0, bounds[k] - halo) for k in range(n)]
        if max(spans) <= tile_size:
            break
        n += 1
    parts = []
    for k in range(n):
        core0, core1 = bounds[k], bounds[k + 1]
        w0, w1 = max(0, core0 - halo), min(length, core1 + halo)
        extra = tile_size - (w1 - w0)  # widen to tile_size, keeping the core centred where possible
        w0 = max(0, w0 - extra // 2)
        w1 = min(length, w0 + tile_size)
        w0 = max(0, w1 - tile_size)
        parts.append((w0, w1, core0, core1))
    return parts


def tile_grid(
    slice_shape: Sequence[int], tile_size: int = DEFAULT_TILE_SIZE, halo: int = DEFAULT_HALO
) -> TileGrid:
    """Cut a slice of (H, W) into tiles of at most ``tile_size`` with ``halo`` px of overlap.

    A slice no larger than ``tile_size`` is one tile (window = core = the slice).

    Raises:
        ValueError: ``halo`` < 0 or ``tile_size`` <= 2 * halo, or an empty slice.
    """
    height, width = int(slice_shape[0]), int(slice_shape[1])
    if height < 1 or width < 1:
        raise ValueError(f"slice must not be empty, got shape {(height, width)}")
    if halo < 0 or tile_size <= 2 * halo:
        raise ValueError(f"need 0 <= halo < tile_size / 2, got tile_size={tile_size}, halo={halo}")
    row_parts, col_parts = _axis_parts(height, tile_size, halo), _axis_parts(width, tile_size, halo)
    tiles = []
    for i, (wr0, wr1, cr0, cr1) in enumerate(row_parts):
        for j, (wc0, wc1, cc0, cc1) in enumerate(col_parts):
            tiles.append(Tile((i, j), i * len(col_parts) + j, (wr0, wc0, wr1, wc1), (cr0, cc0, cr1, cc1)))
    return TileGrid((height, width), (len(row_parts), len(col_parts)), tuple(tiles), tile_size, halo)


# ----------------------------------------------------------------------------
# stitching


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


def pair_overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlaps of the nonzero labels of two same-shaped label arrays.

    Returns:
        (a_ids, b_ids, counts): one entry per (a, b) pair of labels that share pixels.
    """
    both = (a != 0) & (b != 0)
    if not both.any():
        empty = np.empty(0, dtype=np.uint64)
        return empty, empty, np.empty(0, dtype=np.int64)
    keys = (a[both].astype(np.uint64) << np.uint64(32)) | b[both].astype(np.uint64)
    uniq, counts = np.unique(keys, return_counts=True)
    return uniq >> np.uint64(32), uniq & np.uint64(0xFFFFFFFF), counts.astype(np.int64)


def label_areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, pixel counts) of the nonzero labels of ``labels``, ids ascending."""
    top = int(labels.max(initial=0))
    if top <= 4 * labels.size + 1024:  # few, small ids (what workers answer): count densely
        counts = np.bincount(labels.ravel(), minlength=top + 1)
        ids = np.flatnonzero(counts)
        ids = ids[ids != 0]
        return ids.astype(labels.dtype), counts[ids].astype(np.int64)
    ids, counts = np.unique(labels[labels != 0], return_counts=True)
    return ids, counts.astype(np.int64)


def present_labels(labels: np.ndarray) -> np.ndarray:
    """The nonzero ids present in ``labels``, ascending."""
    return label_areas(labels)[0]


def _lookup(keys: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Map each element of ``x`` through sorted ``keys`` -> ``values`` (every x must be a key)."""
    if keys.size and x.size > 64 and int(keys[-1]) <= 4 * x.size + 1024:  # small ids: a dense table
        table = np.zeros(int(keys[-1]) + 1, dtype=values.dtype)
        table[keys.astype(np.int64)] = values
        return table[x]
    return values[np.searchsorted(keys, x)]


def mutual_best_matches(a: np.ndarray, b: np.ndarray, min_iou: float) -> list[tuple[int, int, float]]:
    """Label pairs (a_id, b_id, iou) of two same-shaped label arrays that are each other's best match.

    IoU is measured over these arrays only (for tiles: in the overlap of their windows).
    """
    a_ids, b_ids, inter = pair_overlaps(a, b)
    if inter.size == 0:
        return []
    ka, ca = label_areas(a)
    kb, cb = label_areas(b)
    area_a = _lookup(ka.astype(np.uint64), ca, a_ids)
    area_b = _lookup(kb.astype(np.uint64), cb, b_ids)
    iou = inter / (area_a + area_b - inter)
    best_for_a: dict[int, tuple[float, int]] = {}
    best_for_b: dict[int, tuple[float, int]] = {}
    for x, y, v in zip(a_ids.tolist(), b_ids.tolist(), iou.tolist(), strict=True):
        if v > best_for_a.get(x, (-1.0, 0))[0]:
            best_for_a[x] = (v, y)
        if v > best_for_b.get(y, (-1.0, 0))[0]:
            best_for_b[y] = (v, x)
    return [(x, y, v) for x, (v, y) in best_for_a.items() if v >= min_iou and best_for_b[y][1] == x]


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
        painted = _lookup(lut_keys, lut_values, core)
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
        nodes_a = _lookup(local_ids, nodes, mine_ids).tolist()
        nodes_b = _lookup(seen.local_ids, seen.nodes, their_ids).tolist()
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


def stitch_tiles(
    out: Any, grid: TileGrid, tile_labels: Sequence[np.ndarray], *, merge_iou: float = DEFAULT_MERGE_IOU
) -> StitchResult:
    """Stitch all tiles at once (``tile_labels[k]`` belongs to ``grid.tiles[k]``)."""
    stitcher = TileStitcher(out, grid, merge_iou=merge_iou)
    for tile, labels in zip(grid.tiles, tile_labels, strict=True):
        stitcher.add(tile, labels)
    return stitcher.finish()


class CompressedPlane:
    """An (H, W) uint32 label image held as blosc2-compressed rectangles; zero where never written.

    A stitcher's output when the labels go somewhere else afterwards (the
    plugin pastes them into a labels layer core by core): it is written and
    read by rectangles (``plane[r0:r1, c0:c1]``, the tiles' cores), so its
    memory is the compressed size of what was written (a few MB for a
    stitched 20,000² slice), never the slice's 1.6 GB.

    Args:
        shape: (H, W).

    A rectangle written must not partly overlap one written before (writing
    the same rectangle again replaces it); any rectangle can be read.
    """

    dtype = np.dtype(np.uint32)

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self._parts: dict[tuple[int, int, int, int], bytes] = {}

    @property
    def rectangles(self) -> list[tuple[int, int, int, int]]:
        """The [r0, c0, r1, c1) rectangles written, row-major (nothing is outside them)."""
        return sorted(self._parts)

    @property
    def nbytes_stored(self) -> int:
        """Compressed bytes held."""
        return sum(len(b) for b in self._parts.values())

    def _box(self, key: Any) -> tuple[int, int, int, int]:
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, slice) for k in key)):
            raise TypeError(f"index a CompressedPlane with two slices, got {key!r}")
        (r0, r1, step_r), (c0, c1, step_c) = (k.indices(n) for k, n in zip(key, self.shape, strict=True))
        if step_r != 1 or step_c != 1:
            raise ValueError("a CompressedPlane is read and written by rectangles (step 1)")
        return r0, c0, max(r0, r1), max(c0, c1)

    def __setitem__(self, key: Any, value: Any) -> None:
        box = self._box(key)
        r0, c0, r1, c1 = box
        values = np.broadcast_to(np.asarray(value, dtype=np.uint32), (r1 - r0, c1 - c0))
        for other in self._parts:
            if other != box and other[0] < r1 and r0 < other[2] and other[1] < c1 and c0 < other[3]:
                raise ValueError(f"rectangle {box} partly overlaps {other}, written before")
        self._parts[box] = bytes(
            blosc2.compress2(
                np.ascontiguousarray(values),
                typesize=4,
                clevel=1,
                codec=blosc2.Codec.LZ4,
                filters=[blosc2.Filter.SHUFFLE],
            )
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        r0, c0, r1, c1 = self._box(key)
        out = np.zeros((r1 - r0, c1 - c0), dtype=np.uint32)
        for (a0, b0, a1, b1), chunk in self._parts.items():
            i0, j0, i1, j1 = max(a0, r0), max(b0, c0), min(a1, r1), min(b1, c1)
            if i0 >= i1 or j0 >= j1:
                continue
            part = np.empty((a1 - a0, b1 - b0), dtype=np.uint32)
            blosc2.decompress2(chunk, dst=part)
            out[i0 - r0 : i1 - r0, j0 - c0 : j1 - c0] = part[i0 - a0 : i1 - a0, j0 - b0 : j1 - b0]
        return out


# ----------------------------------------------------------------------------
# linking slices of a stack


class PlaneView:
    """Plane ``index`` of an (N, H, W) array-like, read and written lazily.

    ``PlaneView(stack, z)[r0:r1, c0:c1]`` reads only that rectangle of plane
    z (``stack[z][...]`` on a zarr array would read the whole plane).
    """

    def __init__(self, array: Any, index: int) -> None:
        self.array = array
        self.index = index
        self.shape = tuple(int(s) for s in array.shape[1:])
        self.dtype = array.dtype

    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        return self.array[(self.index, *key)]

    def __setitem__(self, key: Any, value: Any) -> None:
        key = key if isinstance(key, tuple) else (key,)
        self.array[(self.index, *key)] = value


@dataclass
class _Bands:
    shape: tuple[int, int]
    band_rows: int

    def __iter__(self) -> Any:
        for r in range(0, self.shape[0], self.band_rows):
            yield slice(r, min(self.shape[0], r + self.band_rows)), slice(0, self.shape[1])


def _overlap_table(
    prev: Any, cur: Any, band_rows: int
) -> tuple[dict[tuple[int, int], int], dict[int, int], dict[int, int]]:
    inter: dict[tuple[int, int], int] = {}
    area_prev: dict[int, int] = {}
    area_cur: dict[int, int] = {}
    for band in _Bands(tuple(cur.shape), band_rows):
        p, c = np.asarray(prev[band]), np.asarray(cur[band])
        for x, y, n in zip(*(v.tolist() for v in pair_overlaps(p, c)), strict=True):
            inter[(x, y)] = inter.get((x, y), 0) + n
        for target, lab in ((area_prev, p), (area_cur, c)):
            ids, counts = label_areas(lab)
            for i, n in zip(ids.tolist(), counts.tolist(), strict=True):
                target[i] = target.get(i, 0) + n
    return inter, area_prev, area_cur


def link_slice(
    prev: Any,
    cur: Any,
    out: Any,
    *,
    next_id: int,
    iou_threshold: float = DEFAULT_LINK_IOU,
    band_rows: int = DEFAULT_BAND_ROWS,
) -> int:
    """Relabel ``cur`` into ``out`` so objects that continue an object of ``prev`` keep its id.

    Pairs (prev object, cur object) are taken greedily by decreasing IoU,
    each object at most once, while IoU >= ``iou_threshold``; the cur
    objects left over get new ids ``next_id, next_id + 1, ...`` in order of
    their own ids. Read and written band by band (``band_rows`` rows).

    Args:
        prev: (H, W) labels of the previous slice, already linked.
        cur: (H, W) labels of this slice (any ids, 0 = background).
        out: (H, W) uint32 destination (may be ``cur`` itself).
        next_id: the first id not used by any earlier slice.

    Returns:
        The next free id after this slice.
    """
    if tuple(prev.shape) != tuple(cur.shape) or tuple(out.shape) != tuple(cur.shape):
        raise ValueError(f"shapes differ: prev {prev.shape}, cur {cur.shape}, out {out.shape}")
    inter, area_prev, area_cur = _overlap_table(prev, cur, band_rows)
    scored = sorted(
        ((n / (area_prev[x] + area_cur[y] - n), x, y) for (x, y), n in inter.items()),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    mapping: dict[int, int] = {}
    used_prev: set[int] = set()
    for iou, x, y in scored:
        if iou < iou_threshold:
            break
        if x in used_prev or y in mapping:
            continue
        mapping[y] = x
        used_prev.add(x)
    for y in sorted(area_cur):
        if y not in mapping:
            mapping[y] = next_id
            next_id += 1
    _relabel(cur, out, mapping, band_rows)
    return next_id


def _relabel(cur: Any, out: Any, mapping: dict[int, int], band_rows: int) -> None:
    keys = np.array([0, *sorted(mapping)], dtype=np.uint64)
    values = np.array([0, *(mapping[k] for k in sorted(mapping))], dtype=np.uint32)
    for band in _Bands(tuple(cur.shape), band_rows):
        c = np.asarray(cur[band]).astype(np.uint64)
        out[band] = _lookup(keys, values, c)


@dataclass
class StackLinker:
    """Gives the slices of a stack their final ids, one slice after the other.

    With ``link`` the same object on neighbouring slices keeps one id
    (:func:`link_slice`); without it each slice keeps its own ids 1..n.

    Attributes:
        link: link slices by overlap.
        iou_threshold: IoU from which two objects of neighbouring slices are one.
        next_id: the first id not yet used (without ``link``: one past the largest id of any slice).
    """

    link: bool = True
    iou_threshold: float = DEFAULT_LINK_IOU
    band_rows: int = DEFAULT_BAND_ROWS
    next_id: int = 1
    _prev: Any = field(default=None, repr=False)

    def add(self, labels: Any, out: Any) -> None:
        """Write slice ``labels`` (H, W) into ``out`` (H, W) with its final ids; ``out`` may be ``labels``."""
        if not self.link:
            for band in _Bands(tuple(labels.shape), self.band_rows):
                values = np.asarray(labels[band])
                out[band] = values
                self.next_id = max(self.next_id, int(values.max(initial=0)) + 1)
            self._prev = out
            return
        if self._prev is None:
            ids: set[int] = set()
            for band in _Bands(tuple(labels.shape), self.band_rows):
                ids.update(label_areas(np.asarray(labels[band]))[0].tolist())
            mapping = {y: self.next_id + k for k, y in enumerate(sorted(ids))}
            self.next_id += len(mapping)
            _relabel(labels, out, mapping, self.band_rows)
        else:
            self.next_id = link_slice(
                self._prev,
                labels,
                out,
                next_id=self.next_id,
                iou_threshold=self.iou_threshold,
                band_rows=self.band_rows,
            )
        self._prev = out
