"""Label ids and mask writing on one 2D slice of a labels array.

Pure numpy; all arrays here are 2D (H, W) indexed ``[row, col]``.

Modes (how a new boolean mask meets the labels already there):

* ``add``: the mask is painted with a fresh id on top of existing labels,
  or, with ``only_background`` ("Add without overwriting"), only where
  there is no label yet.
* ``union``: the chosen label grows by the mask (mask pixels become the
  label, also where another label was).
* ``intersection``: the chosen label keeps only its pixels inside the
  mask; the pixels it loses become 0; nothing else changes.
* ``overwrite``: the chosen label becomes exactly the mask: its pixels
  outside the mask become 0, mask pixels become the label (other labels are
  replaced only where the mask covers them).

An *object* is what successive prompts refine (more points on the same
cell): each new answer replaces the previous answer for that object. So every
edit is computed from the object's *baseline* (the labels before the
object's first edit), which :func:`compute_edit` recovers from the previous
cumulative edit. Only the bounding box of the pixels involved is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np


class LabelMode(str, Enum):
    """How a mask is written; ``ADD`` allocates a new id, the others refine one."""

    ADD = "add"
    UNION = "union"
    INTERSECTION = "intersection"
    OVERWRITE = "overwrite"


class LabelIdOverflow(ValueError):
    """The labels array's dtype cannot hold the next id."""


def dtype_max_id(dtype: np.dtype) -> int:
    """Largest label id a labels array of ``dtype`` can store."""
    if dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got {dtype}")
    return int(np.iinfo(dtype).max)


class LabelIdTracker:
    """Hands out label ids that are never reused within a session.

    One counter per labels layer (``key``): the next id is one more than the
    highest id ever seen in that layer (allocated here, observed, or found in
    its data), so deleting a label never frees its id for reuse.
    """

    def __init__(self) -> None:
        self._highest: dict[Hashable, int] = {}

    def forget(self, key: Hashable) -> None:
        """Drop the counter of ``key`` (its layer was removed)."""
        self._highest.pop(key, None)

    def __len__(self) -> int:
        return len(self._highest)

    def start(self, key: Hashable, highest: int) -> None:
        """Set ``key``'s highest id without a scan of its data (a layer the plugin just created empty)."""
        self._highest.setdefault(key, int(highest))

    def observe(self, key: Hashable, label_id: int) -> None:
        """Record that ``label_id`` exists in ``key`` (e.g. painted by the user)."""
        if key in self._highest:
            self._highest[key] = max(self._highest[key], int(label_id))

    def allocate(
        self,
        key: Hashable,
        data_max: Callable[[], int],
        count: int = 1,
        seen: int = 0,
        max_id: int = 2**32 - 1,
    ) -> int:
        """Reserve ``count`` consecutive new ids; return the first.

        Args:
            key: the layer (any hashable identity, e.g. ``layer.unique_id``).
            data_max: highest id in the layer's data; called only on the
                first use of ``key`` (a full scan of the array).
            count: how many ids (an automatic segmentation needs many).
            seen: any other id known to exist now (e.g. the current slice's max).
            max_id: the largest id the layer's dtype can hold.

        Raises:
            LabelIdOverflow: the ids would exceed ``max_id``.
        """
        if count < 1:
            raise ValueError("count must be >= 1")
        known = self._highest.get(key)
        if known is None:
            known = int(data_max())
        first = max(known, int(seen), 0) + 1
        last = first + count - 1
        if last > max_id:
            raise LabelIdOverflow(
                f"label id {last} does not fit this layer (max {max_id}); use a uint32 labels layer"
            )
        self._highest[key] = last
        return first


@dataclass(frozen=True)
class SliceEdit:
    """Pixels changed on one 2D slice.

    Attributes:
        rows, cols: (N,) int pixel indices into the slice.
        old: (N,) values before the edit.
        new: (N,) values after the edit.
    """

    rows: np.ndarray = field(repr=False)
    cols: np.ndarray = field(repr=False)
    old: np.ndarray = field(repr=False)
    new: np.ndarray = field(repr=False)

    @property
    def size(self) -> int:
        return int(self.rows.size)

    def apply(self, labels: np.ndarray) -> None:
        """Write ``new`` into ``labels`` (H, W) in place."""
        labels[self.rows, self.cols] = self.new

    @staticmethod
    def empty(dtype: np.dtype) -> SliceEdit:
        none = np.empty(0, dtype=np.intp)
        return SliceEdit(none, none, np.empty(0, dtype), np.empty(0, dtype))


Box = tuple[int, int, int, int]
NOWHERE: Box = (0, 0, 0, 0)
"""An empty box: a label known to have no pixel on the slice."""


def bounding_box(mask: np.ndarray) -> Box | None:
    """``(row0, col0, row1, col1)`` half-open bounds of the True pixels of (H, W) ``mask``."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _union(boxes: list[Box | None]) -> Box | None:
    real = [b for b in boxes if b is not None and b[0] < b[2] and b[1] < b[3]]
    if not real:
        return None
    return min(b[0] for b in real), min(b[1] for b in real), max(b[2] for b in real), max(b[3] for b in real)


def _edit_box(edit: SliceEdit | None) -> Box | None:
    if edit is None or edit.size == 0:
        return None
    return int(edit.rows.min()), int(edit.cols.min()), int(edit.rows.max()) + 1, int(edit.cols.max()) + 1


def _diff(before: np.ndarray, after: np.ndarray, origin: tuple[int, int]) -> SliceEdit:
    rows, cols = np.nonzero(before != after)
    return SliceEdit(rows + origin[0], cols + origin[1], before[rows, cols], after[rows, cols])


def _apply_mode(
    baseline: np.ndarray, mask: np.ndarray, label_id: int, mode: LabelMode, only_background: bool = False
) -> np.ndarray:
    final = baseline.copy()
    if mode is LabelMode.ADD and only_background:
        mask = mask & ((baseline == 0) | (baseline == label_id))
    if mode in (LabelMode.INTERSECTION, LabelMode.OVERWRITE):
        final[(baseline == label_id) & ~mask] = 0
    if mode is not LabelMode.INTERSECTION:
        final[mask] = label_id
    return final


def _check(labels: np.ndarray, other: np.ndarray, label_id: int | None) -> None:
    if labels.ndim != 2 or other.shape != labels.shape:
        raise ValueError(f"labels {labels.shape} and mask {other.shape} must be the same 2D shape")
    if label_id is not None and not 0 < label_id <= dtype_max_id(labels.dtype):
        raise LabelIdOverflow(f"label id {label_id} does not fit labels of dtype {labels.dtype}")


def compute_edit(
    labels: np.ndarray,
    mask: np.ndarray,
    label_id: int,
    mode: LabelMode,
    previous: SliceEdit | None = None,
    only_background: bool = False,
) -> tuple[SliceEdit, SliceEdit]:
    """Plan writing ``mask`` as ``label_id`` with ``mode``, replacing ``previous``.

    Args:
        labels: (H, W) current labels of the slice (not modified).
        mask: (H, W) bool, the model's answer.
        label_id: the id to write (new for ``ADD``, the refined one otherwise).
        mode: see the module docstring.
        previous: the object's cumulative edit so far (returned earlier as
            the second value), or None for a new object. Its pixels that
            still hold its values are first restored to the baseline.
        only_background: in ``ADD`` mode, write only where the baseline is
            background (0): the new object never paints over other labels.

    Returns:
        ``(to_apply, cumulative)``: the pixels to change now (old = current
        values), and the object's total change from its baseline (keep it
        for the next answer).
    """
    _check(labels, mask, label_id)
    return compute_edit_at(labels, mask, (0, 0), label_id, mode, previous, only_background)


def compute_edit_at(
    labels: Any,
    mask: np.ndarray,
    offset: tuple[int, int],
    label_id: int,
    mode: LabelMode,
    previous: SliceEdit | None = None,
    only_background: bool = False,
    label_box: Box | None = None,
) -> tuple[SliceEdit, SliceEdit]:
    """:func:`compute_edit` for a mask given as its bounding box at ``offset`` in the slice.

    Only the union of the mask's box and ``previous``'s box is read from
    ``labels`` (and, in ``intersection`` / ``overwrite`` mode, the refined
    label's box: ``label_box`` if given, else found by scanning the slice),
    so on a 20,000² slice an answer costs the size of the object.

    Args:
        labels: (H, W) array-like with numpy slicing (numpy, a
            :class:`plugin.view.image_slice.LazyPlane` of a zarr labels layer...).
        mask: (h, w) bool, the answer cropped to its box.
        offset: (row0, col0) of ``mask[0, 0]`` in the slice.
        label_box: [r0, c0, r1, c1) holding ``label_id``'s pixels on the slice, when known
            (:data:`NOWHERE`: it has none there); None: found by scanning the slice.

    Returns:
        As :func:`compute_edit`.
    """
    mask = np.asarray(mask).astype(bool, copy=False)
    height, width = int(labels.shape[0]), int(labels.shape[1])
    row0, col0 = int(offset[0]), int(offset[1])
    inside = row0 + mask.shape[0] <= height and col0 + mask.shape[1] <= width
    if mask.ndim != 2 or row0 < 0 or col0 < 0 or not inside:
        raise ValueError(f"mask {mask.shape} at {offset} does not lie inside the slice {(height, width)}")
    if label_id is not None and not 0 < label_id <= dtype_max_id(np.dtype(labels.dtype)):
        raise LabelIdOverflow(f"label id {label_id} does not fit labels of dtype {labels.dtype}")
    own = bounding_box(mask)
    boxes = [None if own is None else (own[0] + row0, own[1] + col0, own[2] + row0, own[3] + col0)]
    boxes.append(_edit_box(previous))
    if mode in (LabelMode.INTERSECTION, LabelMode.OVERWRITE):
        found = label_box if label_box is not None else bounding_box(np.asarray(labels[:, :]) == label_id)
        boxes.append(found)
    box = _union(boxes)
    if box is None:
        empty = SliceEdit.empty(np.dtype(labels.dtype))
        return empty, empty
    r0, c0, r1, c1 = box
    current = np.array(labels[r0:r1, c0:c1])
    baseline = current.copy()
    if previous is not None and previous.size:
        rows, cols = previous.rows - r0, previous.cols - c0
        ours = baseline[rows, cols] == previous.new
        baseline[rows[ours], cols[ours]] = previous.old[ours]
    region = np.zeros(current.shape, dtype=bool)
    top, left = row0 - r0, col0 - c0  # the mask's place in the region (may start before it)
    mr0, mc0 = max(0, -top), max(0, -left)
    mr1, mc1 = min(mask.shape[0], current.shape[0] - top), min(mask.shape[1], current.shape[1] - left)
    if mr1 > mr0 and mc1 > mc0:
        region[top + mr0 : top + mr1, left + mc0 : left + mc1] = mask[mr0:mr1, mc0:mc1]
    final = _apply_mode(baseline, region, label_id, mode, only_background)
    return _diff(current, final, (r0, c0)), _diff(baseline, final, (r0, c0))


def compute_paste(
    labels: np.ndarray, objects: np.ndarray, first_id: int, only_background: bool = False
) -> SliceEdit:
    """Plan pasting an automatic segmentation on top of ``labels``.

    Args:
        labels: (H, W) current labels (not modified).
        objects: (H, W) integer labels from the worker, 0 = background,
            objects 1..n.
        first_id: the id given to object 1 (object k gets ``first_id + k - 1``).
        only_background: paste only where ``labels`` is 0 (existing labels
            are never painted over).

    Returns:
        The pixels to change.
    """
    _check(labels, objects, None)
    box = bounding_box(objects > 0)
    if box is None:
        return SliceEdit.empty(labels.dtype)
    top = int(objects.max())
    if first_id < 1 or first_id + top - 1 > dtype_max_id(labels.dtype):
        raise LabelIdOverflow(f"ids {first_id}..{first_id + top - 1} do not fit labels of {labels.dtype}")
    r0, c0, r1, c1 = box
    current = labels[r0:r1, c0:c1]
    sub = objects[r0:r1, c0:c1]
    paint = (sub > 0) & (current == 0) if only_background else sub > 0
    final = np.where(paint, sub.astype(np.int64) + (first_id - 1), current).astype(labels.dtype)
    return _diff(current, final, (r0, c0))


def kept_objects(areas: Any, min_area: int) -> np.ndarray:
    """The renumbering of :func:`drop_small_objects` from the objects' areas alone.

    Args:
        areas: pixels of object i at ``areas[i - 1]``.
        min_area: smallest object kept, in pixels.

    Returns:
        (n + 1,) uint32: object i becomes ``lut[i]`` (0: dropped; kept ones 1..m in their order).
    """
    sizes = np.asarray(areas, dtype=np.int64)
    keep = sizes >= max(int(min_area), 1)
    lut = np.zeros(sizes.size + 1, dtype=np.uint32)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lut


class Relabelled:
    """``lut[labels]`` read rectangle by rectangle (an (H, W) array-like; nothing slice-sized is made)."""

    def __init__(self, labels: Any, lut: np.ndarray) -> None:
        self.labels, self.lut = labels, lut
        self.shape = tuple(int(n) for n in labels.shape)
        self.dtype = lut.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.lut[np.asarray(self.labels[key])]


def drop_small_objects(objects: np.ndarray, min_area: int) -> np.ndarray:
    """An automatic segmentation without its objects under ``min_area`` pixels.

    Args:
        objects: (H, W) integer labels, 0 = background, objects 1..n.
        min_area: smallest object kept, in pixels (<= 1 keeps all).

    Returns:
        (H, W) of the same dtype with the kept objects renumbered 1..m in
        their order (``objects`` itself when nothing is dropped).
    """
    if min_area <= 1 or objects.size == 0 or not objects.any():
        return objects
    counts = np.bincount(objects.ravel().astype(np.int64))
    keep = counts >= min_area
    keep[0] = False
    if keep[1:][counts[1:] > 0].all():  # every object present is large enough
        return objects
    relabel = np.zeros(counts.size, dtype=objects.dtype)
    relabel[keep] = np.arange(1, int(keep.sum()) + 1, dtype=objects.dtype)
    return relabel[objects]
