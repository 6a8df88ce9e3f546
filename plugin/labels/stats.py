"""What the label-control panel shows and does: pixel counts, where a label is, delete and merge.

Pure numpy, no Qt, no napari. Arrays are nD integer labels (any
array-like indexable along its first axis, e.g. dask or zarr); 2D slices
are indexed ``[row, col]``.

Counting a large nD layer is done once (slab by slab along the first axis,
so the temporary memory is one slab), then kept current by *changes*: every
edit napari records (``(old_values, new_values)`` of the changed pixels) is
applied to the counts with :meth:`LabelCounts.apply`, so painting one brush
stroke in a 2 GB volume costs what the stroke costs.

Delete and merge are *plans* (:class:`LabelChange`): the indices of the
pixels to change, their old values and the new value, which the caller
writes with ``layer.data_setitem`` (one undo step). Names follow with
:func:`names_after_delete` and :func:`names_after_merge`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plugin.labels.pyramid import stored_chunk_boxes

SLAB_VOXELS = 1 << 24
"""Voxels read per step of a delete/merge plan (bounds the temporary copy: 64 MiB of uint32)."""
COUNT_BLOCK_VOXELS = 1 << 20
"""Voxels read per step of a full count (4 MiB of uint32), whatever the layer's size."""
BLOCK_SIDE = 1024
"""Side of the (rows, cols) tiles a count reads when one slice is larger than a block: a pyramid's
chunks (:data:`plugin.labels.pyramid.PYRAMID_CHUNK`), so each chunk is decompressed once."""
BINCOUNT_MAX_ID = 1 << 24
"""Above this id, counts use ``np.unique`` (a bincount array would be too large)."""
BINCOUNT_PIECE = 1 << 18
"""Values counted per ``np.bincount`` call (its int64 copy: 2 MiB)."""


def count_values(values: np.ndarray) -> dict[int, int]:
    """``{value: occurrences}`` of an integer array (background 0 included).

    Counted :data:`BINCOUNT_PIECE` values at a time, so the int64 copy ``np.bincount`` makes stays small.
    """
    flat = np.asarray(values).ravel()
    if flat.size == 0:
        return {}
    low, high = int(flat.min()), int(flat.max())
    if low >= 0 and high < BINCOUNT_MAX_ID:
        counts = np.zeros(high + 1, np.int64)
        for start in range(0, flat.size, BINCOUNT_PIECE):
            piece = flat[start : start + BINCOUNT_PIECE]
            counts += np.bincount(piece.astype(np.int64, copy=False), minlength=high + 1)
        ids = np.flatnonzero(counts)
        return {int(i): int(counts[i]) for i in ids}
    ids, counts = np.unique(flat, return_counts=True)
    return {int(i): int(n) for i, n in zip(ids, counts, strict=True)}


def _slabs(shape: Sequence[int], slab_voxels: int) -> Iterable[slice]:
    """Slices along axis 0 covering ``shape`` with about ``slab_voxels`` voxels each."""
    if len(shape) == 0 or shape[0] == 0:
        return
    per_index = max(int(np.prod(shape[1:], dtype=np.int64)), 1)
    step = max(slab_voxels // per_index, 1)
    for start in range(0, int(shape[0]), step):
        yield slice(start, min(start + step, int(shape[0])))


def blocks(shape: Sequence[int], max_voxels: int, side: int = BLOCK_SIDE) -> Iterable[tuple[slice, ...]]:
    """Boxes covering an nD ``shape`` with at most about ``max_voxels`` voxels each: slabs along axis 0
    while a slab fits, else one index of the leading axes at a time, a 2D slice larger than
    ``max_voxels`` in (``side``, ``side``) tiles (rows, cols)."""
    shape = tuple(int(s) for s in shape)
    if not shape or 0 in shape:
        return
    total = int(np.prod(shape, dtype=np.int64))
    if total <= max_voxels:
        yield tuple(slice(0, n) for n in shape)
    elif len(shape) > 2 and int(np.prod(shape[1:], dtype=np.int64)) <= max_voxels:
        rest = tuple(slice(0, n) for n in shape[1:])
        for slab in _slabs(shape, max_voxels):
            yield (slab, *rest)
    elif len(shape) > 2:
        for i in range(shape[0]):
            for box in blocks(shape[1:], max_voxels, side):
                yield (slice(i, i + 1), *box)
    elif len(shape) == 1:
        for start in range(0, shape[0], max_voxels):
            yield (slice(start, min(start + max_voxels, shape[0])),)
    else:
        rows, cols = shape
        for r in range(0, rows, side):
            for c in range(0, cols, side):
                yield (slice(r, min(r + side, rows)), slice(c, min(c + side, cols)))


def count_boxes(data: Any, slab_voxels: int = COUNT_BLOCK_VOXELS) -> list[tuple[slice, ...]]:
    """The boxes a count of ``data`` reads: of a zarr array, only the chunks its store holds
    (:func:`plugin.labels.pyramid.stored_chunk_boxes`); else :func:`blocks` covering it."""
    if len(data.shape) == 0:
        return []
    stored = stored_chunk_boxes(data)
    return list(blocks(data.shape, slab_voxels)) if stored is None else stored


def boxes_voxels(boxes: Iterable[tuple[slice, ...]]) -> int:
    """Voxels the boxes (whole slices, start and stop given) cover together."""
    return sum(int(np.prod([b.stop - b.start for b in box], dtype=np.int64)) for box in boxes)


def pixel_counts(
    data: Any, slab_voxels: int = COUNT_BLOCK_VOXELS, boxes: list[tuple[slice, ...]] | None = None
) -> dict[int, int]:
    """``{label_id: pixels}`` of every non-zero label of an nD labels array, block by block
    (:func:`count_boxes`, or ``boxes`` found already: the temporary memory is one block, also for
    one slide of 100,000² pixels, and a chunked store's unwritten chunks are not read)."""
    total: dict[int, int] = {}
    for box in count_boxes(data, slab_voxels) if boxes is None else boxes:
        for value, n in count_values(np.asarray(data[box])).items():
            total[value] = total.get(value, 0) + n
    total.pop(0, None)
    return total


class LabelCounts:
    """Pixel count per label id, kept up to date by changes (no rescans).

    Args:
        counts: initial ``{label_id: pixels}`` (from :func:`pixel_counts`).
    """

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self._counts: dict[int, int] = {int(k): int(v) for k, v in (counts or {}).items() if k and v > 0}

    def apply(self, old: np.ndarray, new: np.ndarray | int) -> None:
        """Pixels that held ``old`` (N,) now hold ``new`` ((N,) or one value for all)."""
        old = np.asarray(old).ravel()
        if old.size == 0:
            return
        new_values = np.asarray(new).ravel()
        removed = count_values(old)
        added = count_values(new_values) if new_values.size == old.size else {int(new_values[0]): old.size}
        for value, n in removed.items():
            self._counts[value] = self._counts.get(value, 0) - n
        for value, n in added.items():
            self._counts[value] = self._counts.get(value, 0) + n
        for value in {*removed, *added}:
            if value == 0 or self._counts.get(value, 0) <= 0:
                self._counts.pop(value, None)

    def get(self, label_id: int) -> int:
        return self._counts.get(int(label_id), 0)

    def raw(self) -> Mapping[int, int]:
        """``{label_id: pixels}`` unsorted, not copied (read only)."""
        return self._counts

    def as_dict(self) -> dict[int, int]:
        """``{label_id: pixels}`` sorted by id (background left out)."""
        return dict(sorted(self._counts.items()))


class LabelBoxes:
    """Where each label of an nD labels array may be: boxes that hold all its pixels.

    Fed with every change to the array (:meth:`extend`: where it wrote and
    the values there before and after), so boxes only grow: a box may be
    larger than its label (after an erase), never smaller. Boxes are kept
    per label and per index on the *stack axes* (all but the two longest
    axes, the image plane), so a label on many slices has one box per slice.
    It answers only for an array followed since it was empty (the caller's
    promise), so refining a label on a 20,000² slice reads that label's box,
    not the slice.

    Args:
        shape: the array's shape.
    """

    MAX_SPREAD = 64
    """A region over more stack positions than this is kept as one box (any of them)."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.ndim = len(shape)
        longest = sorted(range(self.ndim), key=lambda a: (int(shape[a]), a))[-2:]
        self.stack_axes = [a for a in range(self.ndim) if a not in longest]
        self._boxes: dict[int, dict[tuple[int, ...] | None, tuple[np.ndarray, np.ndarray]]] = {}

    def __len__(self) -> int:
        return len(self._boxes)

    def _grow(self, label_id: int, where: tuple[int, ...] | None, lo: np.ndarray, hi: np.ndarray) -> None:
        entries = self._boxes.setdefault(label_id, {})
        found = entries.get(where)
        if found is None:
            entries[where] = (lo.astype(np.int64), hi.astype(np.int64))
        else:
            np.minimum(found[0], lo, out=found[0])
            np.maximum(found[1], hi, out=found[1])

    def extend(self, index: Sequence[Any], values: np.ndarray) -> None:
        """Pixels at ``index`` held or now hold ``values``.

        Args:
            index: ``ndim`` arrays of (N,) pixel indices, or ``ndim`` slices
                (a region: every value in ``values`` may be anywhere in it).
            values: (N,) per pixel (or several (N,) arrays concatenated:
                before and after) for index arrays; any values for slices.
        """
        if len(index) != self.ndim:
            raise ValueError(f"index of {len(index)} axes for an array of {self.ndim}")
        values = np.asarray(values).ravel()
        if all(isinstance(i, slice) for i in index):
            self._extend_region(index, values)
            return
        points = np.stack([np.asarray(i, dtype=np.int64).ravel() for i in index])  # (ndim, N)
        if points.shape[1] == 0:
            return
        repeat = values.size // points.shape[1]
        if repeat * points.shape[1] != values.size:
            raise ValueError(f"{values.size} values for {points.shape[1]} pixels")
        stack = points[self.stack_axes]
        if (stack.min(axis=1) == stack.max(axis=1)).all():  # one place (a 2D layer, one slice of a stack)
            self._extend_one_place(tuple(int(x) for x in stack[:, 0]), points, values.reshape(repeat, -1))
            return
        points = np.tile(points, repeat)
        keys = np.vstack([values.astype(np.int64)[None], points[self.stack_axes]])  # (1 + stack axes, N)
        order = np.lexsort(keys[::-1])
        keys, points = keys[:, order], points[:, order]
        starts = np.flatnonzero(np.r_[True, (keys[:, 1:] != keys[:, :-1]).any(axis=0)])
        lows = np.minimum.reduceat(points, starts, axis=1)
        highs = np.maximum.reduceat(points, starts, axis=1) + 1
        for k, start in enumerate(starts.tolist()):
            label_id = int(keys[0, start])
            if label_id:
                self._grow(label_id, tuple(int(x) for x in keys[1:, start]), lows[:, k], highs[:, k])

    def _extend_one_place(self, where: tuple[int, ...], points: np.ndarray, values: np.ndarray) -> None:
        """Pixels ``points`` (ndim, N), all at one place on the stack axes, held or hold ``values``
        (k, N): each label's box from element-wise minima and maxima (no sort of the pixels, as a
        whole-slide paste of millions of pixels would need)."""
        ids = values.astype(np.int64, copy=False)
        top = int(ids.max()) + 1
        if top > 2 * ids.size + 65_536:  # sparse large ids: tables of the ids present, not up to the largest
            present, inverse = np.unique(ids, return_inverse=True)
            ids = inverse.reshape(ids.shape)
        else:
            present = np.arange(top, dtype=np.int64)
        lo = np.full((self.ndim, present.size), np.iinfo(np.int64).max, dtype=np.int64)
        hi = np.full((self.ndim, present.size), -1, dtype=np.int64)
        for row in ids:
            labelled = np.flatnonzero(present[row] != 0)  # background has no box
            if labelled.size == 0:
                continue
            at, row = (points, row) if labelled.size == row.size else (points[:, labelled], row[labelled])
            for axis in range(self.ndim):
                np.minimum.at(lo[axis], row, at[axis])
                np.maximum.at(hi[axis], row, at[axis])
        for k in np.flatnonzero(hi[0] >= 0).tolist():
            if present[k]:
                self._grow(int(present[k]), where, lo[:, k], hi[:, k] + 1)

    def _extend_region(self, index: Sequence[slice], values: np.ndarray) -> None:
        big = np.iinfo(np.int64).max
        lo = np.array([0 if i.start is None else int(i.start) for i in index], dtype=np.int64)
        hi = np.array([big if i.stop is None else int(i.stop) for i in index], dtype=np.int64)
        spread = [range(int(lo[a]), int(hi[a])) for a in self.stack_axes]
        places: list[tuple[int, ...] | None] = [None]
        if int(np.prod([len(r) for r in spread], dtype=np.float64)) <= self.MAX_SPREAD:
            places = list(itertools.product(*spread))
        for label_id in np.unique(values).tolist():
            if not label_id:
                continue
            for where in places:
                if where is None:
                    self._grow(int(label_id), None, lo, hi)
                    continue
                at_lo, at_hi = lo.copy(), hi.copy()
                at_lo[self.stack_axes], at_hi[self.stack_axes] = where, np.asarray(where) + 1
                self._grow(int(label_id), where, at_lo, at_hi)

    def box_on(
        self, label_id: int, row_axis: int, col_axis: int, fixed: Sequence[int | None]
    ) -> tuple[int, int, int, int] | None:
        """[r0, c0, r1, c1) on one 2D slice that holds every pixel of ``label_id`` there; None: none there.

        Args:
            row_axis, col_axis: the slice's axes.
            fixed: one entry per axis: the slice's index on the other axes (``None`` on its own).
        """
        found: list[tuple[np.ndarray, np.ndarray]] = []
        for lo, hi in self._boxes.get(int(label_id), {}).values():
            if all(
                index is None or axis in (row_axis, col_axis) or lo[axis] <= index < hi[axis]
                for axis, index in enumerate(fixed)
            ):
                found.append((lo, hi))
        if not found:
            return None
        r0, c0 = min(int(lo[row_axis]) for lo, _ in found), min(int(lo[col_axis]) for lo, _ in found)
        r1, c1 = max(int(hi[row_axis]) for _, hi in found), max(int(hi[col_axis]) for _, hi in found)
        return r0, c0, r1, c1


@dataclass(frozen=True)
class LabelRow:
    """One row of the label list.

    Attributes:
        label_id: the id (> 0).
        name: its name, ``""`` when unnamed.
        pixels: its pixel count in the whole layer (0: named but absent).
    """

    label_id: int
    name: str
    pixels: int


def label_rows(counts: Mapping[int, int], names: Mapping[int, str]) -> list[LabelRow]:
    """Rows for every label present or named, sorted by id."""
    ids = sorted({int(i) for i in counts if i > 0 and counts[i] > 0} | {int(i) for i in names if i > 0})
    return [LabelRow(i, names.get(i, ""), int(counts.get(i, 0))) for i in ids]


def label_columns(counts: Mapping[int, int], names: Mapping[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """The rows of :func:`label_rows` as two (N,) int64 columns, ids ascending and their pixels.

    Built with numpy (no object per row), so a list of 300,000 labels is ready in milliseconds.
    """
    present = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    pixels = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
    keep = (present > 0) & (pixels > 0)
    present, pixels = present[keep], pixels[keep]
    named = np.fromiter((int(i) for i in names if int(i) > 0), dtype=np.int64)
    ids = np.sort(np.concatenate([present, named]))  # np.union1d is 30x slower here (numpy 2.3)
    ids = ids[np.concatenate([[True], ids[1:] != ids[:-1]])] if len(ids) else ids
    column = np.zeros(len(ids), dtype=np.int64)
    column[np.searchsorted(ids, present)] = pixels  # every present id is in ids
    return ids, column


def locate(
    data: Any, label_id: int, displayed: tuple[int, int], current: Sequence[int | None]
) -> tuple[int | None, ...] | None:
    """Where to look at ``label_id``: the slice to show, as indices of the non-displayed axes.

    Args:
        data: nD labels.
        label_id: the label.
        displayed: ``(row_axis, col_axis)`` shown now.
        current: the slice shown now, one entry per axis (``None`` on the
            displayed ones, as :attr:`plugin.view.coords.SlicePlane.index`).

    Returns:
        ``current`` when the label is on the shown slice, else the first
        slice (in index order) that holds it, else None (not in the layer).
    """
    ndim = len(data.shape)
    fixed_axes = [a for a in range(ndim) if a not in displayed]
    if not fixed_axes:
        return tuple(current) if bool(np.any(np.asarray(data) == label_id)) else None
    here = tuple(slice(None) if a in displayed else int(current[a] or 0) for a in range(ndim))
    if bool(np.any(np.asarray(data[here]) == label_id)):
        return tuple(current)
    outer = fixed_axes[0]
    for start in range(int(data.shape[outer])):
        index = tuple(start if a == outer else slice(None) for a in range(ndim))
        block = np.asarray(data[index]) == label_id  # axis ``outer`` removed
        if not block.any():
            continue
        rest = [a for a in range(ndim) if a != outer]
        inner = [rest.index(a) for a in fixed_axes[1:]]
        shown = tuple(rest.index(a) for a in displayed)
        hits = block.any(axis=shown) if inner else None
        position: dict[int, int] = {outer: start}
        if hits is not None:
            first = np.argwhere(hits)[0]
            position.update({a: int(first[k]) for k, a in enumerate(fixed_axes[1:])})
        return tuple(None if a in displayed else position[a] for a in range(ndim))
    return None


@dataclass(frozen=True)
class LabelChange:
    """Pixels of an nD labels array to set to one value (one undo step).

    Attributes:
        indices: ``ndim`` arrays of (N,) pixel indices (numpy fancy indexing).
        old: (N,) values before.
        new: the value written to all of them.
    """

    indices: tuple[np.ndarray, ...] = field(repr=False)
    old: np.ndarray = field(repr=False)
    new: int

    @property
    def size(self) -> int:
        return int(self.old.size)


def _plan(data: Any, ids: Iterable[int], new: int, slab_voxels: int) -> LabelChange:
    wanted = np.asarray(sorted({int(i) for i in ids if int(i) > 0 and int(i) != new}), dtype=np.int64)
    ndim = len(data.shape)
    parts: list[tuple[np.ndarray, ...]] = []
    olds: list[np.ndarray] = []
    if wanted.size and ndim:
        for slab in _slabs(data.shape, slab_voxels):
            block = np.asarray(data[slab])
            where = np.nonzero(np.isin(block, wanted))
            if where[0].size:
                olds.append(block[where])
                parts.append((where[0] + slab.start, *where[1:]))
    if not parts:
        empty = np.empty(0, dtype=np.intp)
        return LabelChange(tuple(empty for _ in range(ndim)), np.empty(0, dtype=data.dtype), int(new))
    indices = tuple(np.concatenate([p[a] for p in parts]).astype(np.intp) for a in range(ndim))
    return LabelChange(indices, np.concatenate(olds), int(new))


def plan_delete(data: Any, label_ids: Iterable[int], slab_voxels: int = SLAB_VOXELS) -> LabelChange:
    """Every pixel of ``label_ids`` becomes background (0)."""
    return _plan(data, label_ids, 0, slab_voxels)


def plan_merge(data: Any, sources: Iterable[int], target: int, slab_voxels: int = SLAB_VOXELS) -> LabelChange:
    """Every pixel of the ``sources`` labels becomes ``target`` (> 0)."""
    if int(target) <= 0:
        raise ValueError("merge target must be a label id > 0 (0 is the background)")
    return _plan(data, sources, int(target), slab_voxels)


def names_after_delete(names: Mapping[int, str], label_ids: Iterable[int]) -> dict[int, str]:
    """``names`` without the deleted labels."""
    gone = {int(i) for i in label_ids}
    return {k: v for k, v in names.items() if k not in gone}


def names_after_merge(names: Mapping[int, str], sources: Iterable[int], target: int) -> dict[int, str]:
    """Names after merging ``sources`` into ``target``.

    The target keeps its name; a target without a name takes the name of the
    first named source (by id), so merging never loses the only name; the
    sources' names are removed.
    """
    merged = sorted({int(i) for i in sources} - {int(target)})
    out = {k: v for k, v in names.items() if k not in merged}
    if int(target) not in out:
        inherited = next((names[i] for i in merged if i in names), None)
        if inherited is not None:
            out[int(target)] = inherited
    return dict(sorted(out.items()))
