"""Linking the slices of a stack: one object keeps one id through z or time.

Pure numpy. :func:`link_slice` relabels slice z+1 so an object that overlaps
an object of slice z with IoU >= ``iou_threshold`` keeps its id (greedy by
IoU, one-to-one); :class:`StackLinker` carries the next free id through a
stack and can keep per-slice ids instead. Both work band by band on
array-likes (:class:`PlaneView` views one plane of a 3D zarr array lazily),
so memory is bounded by one band, never a slice.

All indices are (row, col).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol.geometry.overlaps import label_areas, pair_overlaps, remap_ids

DEFAULT_LINK_IOU = 0.5
DEFAULT_BAND_ROWS = 1024


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

    See :func:`link_mapping` for the pairing; ``out`` (H, W) uint32 may be ``cur`` itself.

    Returns:
        The next free id after this slice.
    """
    if tuple(out.shape) != tuple(cur.shape):
        raise ValueError(f"shapes differ: prev {prev.shape}, cur {cur.shape}, out {out.shape}")
    mapping, next_id = link_mapping(
        prev, cur, next_id=next_id, iou_threshold=iou_threshold, band_rows=band_rows
    )
    _relabel(cur, out, mapping, band_rows)
    return next_id


def link_mapping(
    prev: Any,
    cur: Any,
    *,
    next_id: int,
    iou_threshold: float = DEFAULT_LINK_IOU,
    band_rows: int = DEFAULT_BAND_ROWS,
) -> tuple[dict[int, int], int]:
    """The final id of each object of ``cur``: the id of the ``prev`` object it continues, or a new one.

    Pairs (prev object, cur object) are taken greedily by decreasing IoU,
    each object at most once, while IoU >= ``iou_threshold``; the cur
    objects left over get new ids ``next_id, next_id + 1, ...`` in order of
    their own ids. Read and written band by band (``band_rows`` rows).

    Args:
        prev: (H, W) labels of the previous slice, already linked.
        cur: (H, W) labels of this slice (any ids, 0 = background).
        next_id: the first id not used by any earlier slice.

    Returns:
        ``{cur id: final id}`` for every id present in ``cur``, and the next free id after this slice.
    """
    if tuple(prev.shape) != tuple(cur.shape):
        raise ValueError(f"shapes differ: prev {prev.shape}, cur {cur.shape}")
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
    return mapping, next_id


def _relabel(cur: Any, out: Any, mapping: dict[int, int], band_rows: int) -> None:
    keys = np.array([0, *sorted(mapping)], dtype=np.uint64)
    values = np.array([0, *(mapping[k] for k in sorted(mapping))], dtype=np.uint32)
    for band in _Bands(tuple(cur.shape), band_rows):
        c = np.asarray(cur[band]).astype(np.uint64)
        out[band] = remap_ids(keys, values, c)


@dataclass
class StackLinker:
    """Gives the slices of a stack their final ids, one slice after the other.

    With ``link`` the same object on neighbouring slices keeps one id
    (:func:`link_slice`); without it each slice keeps its own ids 1..n.

    Attributes:
        link: link slices by overlap.
        iou_threshold: IoU from which two objects of neighbouring slices are one.
        next_id: the first id not yet used (without ``link``: one past the largest id of any slice).
        last_mapping: ``{slice id: final id}`` of the slice added last; None: its ids were kept
            (without ``link``).
    """

    link: bool = True
    iou_threshold: float = DEFAULT_LINK_IOU
    band_rows: int = DEFAULT_BAND_ROWS
    next_id: int = 1
    last_mapping: dict[int, int] | None = None
    _prev: Any = field(default=None, repr=False)

    def add(self, labels: Any, out: Any) -> None:
        """Write slice ``labels`` (H, W) into ``out`` (H, W) with its final ids; ``out`` may be ``labels``."""
        if not self.link:
            for band in _Bands(tuple(labels.shape), self.band_rows):
                values = np.asarray(labels[band])
                out[band] = values
                self.next_id = max(self.next_id, int(values.max(initial=0)) + 1)
            self._prev, self.last_mapping = out, None
            return
        if self._prev is None:
            ids: set[int] = set()
            for band in _Bands(tuple(labels.shape), self.band_rows):
                ids.update(label_areas(np.asarray(labels[band]))[0].tolist())
            mapping = {y: self.next_id + k for k, y in enumerate(sorted(ids))}
            self.next_id += len(mapping)
        else:
            mapping, self.next_id = link_mapping(
                self._prev,
                labels,
                next_id=self.next_id,
                iou_threshold=self.iou_threshold,
                band_rows=self.band_rows,
            )
        _relabel(labels, out, mapping, self.band_rows)
        self._prev, self.last_mapping = out, mapping

    def final_scores(self, scores: Sequence[float] | np.ndarray) -> dict[int, float]:
        """``{final id: score}`` of the slice added last, from its ``scores`` (slice id ``i`` at
        ``scores[i - 1]``; ids absent from the slice are left out when linked)."""
        mapping = self.last_mapping
        pairs = enumerate((float(s) for s in scores), start=1)
        if mapping is None:
            return dict(pairs)
        return {mapping[i]: score for i, score in pairs if i in mapping}
