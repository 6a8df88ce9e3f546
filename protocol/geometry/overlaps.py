"""Overlaps between two label images: the counting both stitching and linking stand on.

Pure numpy. Arrays are (H, W) integer labels of the same shape, 0 = background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DENSE_PAIR_BINS = 1 << 21
"""Pair tables up to this many (a, b) bins are counted with ``bincount`` (no sort)."""
ID_TABLE_FACTOR = 4
"""Ids up to this many times an array's pixels (+ 1,024) are counted with tables indexed by id."""


def pair_overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlaps of the nonzero labels of two same-shaped label arrays.

    Returns:
        (a_ids, b_ids, counts): one entry per (a, b) pair of labels that share pixels,
        ascending by (a, b); ids uint64, counts int64.
    """
    both = (a != 0) & (b != 0)
    if not both.any():
        empty = np.empty(0, dtype=np.uint64)
        return empty, empty, np.empty(0, dtype=np.int64)
    a_both, b_both = a[both], b[both]
    span = int(b_both.max()) + 1
    if (int(a_both.max()) + 1) * span <= DENSE_PAIR_BINS:  # small ids (what workers answer): count densely
        counts = np.bincount(a_both.astype(np.intp) * span + b_both, minlength=0)
        keys = np.flatnonzero(counts != 0)
        return (
            (keys // span).astype(np.uint64),
            (keys % span).astype(np.uint64),
            counts[keys].astype(np.int64),
        )
    keys64 = (a_both.astype(np.uint64) << np.uint64(32)) | b_both.astype(np.uint64)
    uniq, found = np.unique(keys64, return_counts=True)
    return uniq >> np.uint64(32), uniq & np.uint64(0xFFFFFFFF), found.astype(np.int64)


def labelled_pixels(labels: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``labels`` and same-shaped ``others``, flattened (1-D), where ``labels`` is nonzero.

    When at least half the pixels are labelled, all of them come back (background included):
    selecting costs about a pass and would save little. For counts by id from 1 up.
    """
    flats = [labels.ravel(), *(other.ravel() for other in others)]
    if np.count_nonzero(flats[0]) >= flats[0].size // 2:
        return flats
    labelled = flats[0] != 0
    return [flat[labelled] for flat in flats]


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


def remap_ids(keys: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Map each element of ``x`` through sorted ``keys`` -> ``values`` (every x must be a key)."""
    if keys.size and x.size > 64 and int(keys[-1]) <= 4 * x.size + 1024:  # small ids: a dense table
        table = np.zeros(int(keys[-1]) + 1, dtype=values.dtype)
        table[keys.astype(np.int64)] = values
        return table[x]
    return values[np.searchsorted(keys, x)]


@dataclass(frozen=True)
class CompactLabels:
    """A label array with its ids renumbered 1..n in order (0 stays background).

    Attributes:
        ids: (n,) the original ids present, ascending (``small == k`` is ``ids[k - 1]``).
        small: the labels renumbered 0..n, uint16 when n < 65,536, else uint32; same shape.
        areas: (n,) int64 pixels of each id.
    """

    ids: np.ndarray
    small: np.ndarray
    areas: np.ndarray


def compact_labels(labels: np.ndarray) -> CompactLabels:
    """:class:`CompactLabels` of an integer label array (small ids: tables, no sort)."""
    top = int(labels.max(initial=0))
    if top <= ID_TABLE_FACTOR * labels.size + 1024:
        flat = labels.astype(np.intp).ravel()  # cast once for both the count and the lookup
        counts = np.bincount(flat, minlength=1)
        ids = np.flatnonzero(counts[1:] != 0) + 1
        dtype = np.uint16 if ids.size < 0xFFFF else np.uint32
        table = np.zeros(counts.size, dtype=dtype)
        table[ids] = np.arange(1, ids.size + 1)
        return CompactLabels(ids, table.take(flat).reshape(labels.shape), counts[ids].astype(np.int64))
    found, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    shift = 0 if found[0] == 0 else 1
    keep = slice(1 - shift, None)
    small = (inverse.reshape(labels.shape) + shift).astype(np.uint32)
    return CompactLabels(found[keep], small, counts[keep].astype(np.int64))


def mutual_best_matches(a: np.ndarray, b: np.ndarray, min_iou: float) -> list[tuple[int, int, float]]:
    """Label pairs (a_id, b_id, iou) of two same-shaped label arrays that are each other's best match.

    IoU is measured over these arrays only (for tiles: in the overlap of their windows). Ties go to
    the lower id. Pairs are returned by ascending ``a_id``.
    """
    return mutual_best_matches_compact(a, compact_labels(b), min_iou)


def mutual_best_matches_compact(
    a: np.ndarray, b: CompactLabels, min_iou: float
) -> list[tuple[int, int, float]]:
    """:func:`mutual_best_matches` against labels already compacted (e.g. once, on another thread)."""
    a_ids, b_ids, iou = mutual_best_pairs_compact(a, b, min_iou)
    return list(zip(a_ids.tolist(), b_ids.tolist(), iou.tolist(), strict=True))


def mutual_best_pairs_compact(
    a: np.ndarray, b: CompactLabels, min_iou: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`mutual_best_matches_compact` as arrays: (a ids int64 (k,), b ids (k,), IoU float64 (k,)).

    With small ids in ``a`` (what workers answer) no sort: pairs and areas are counted in one
    ``bincount`` of (a id, b's compact id) over a's labelled pixels only (b's areas come with ``b``).
    """
    top_a, span = int(a.max(initial=0)), b.ids.size + 1
    if top_a == 0 or span == 1:
        return np.empty(0, np.int64), np.empty(0, b.ids.dtype), np.empty(0, np.float64)
    if (top_a + 1) * span > DENSE_PAIR_BINS:  # large ids in a: compact it too
        a_compact = compact_labels(a)
        small_ids, b_ids, iou = mutual_best_pairs_compact(a_compact.small, b, min_iou)
        return a_compact.ids[small_ids - 1].astype(np.int64), b_ids, iou
    # Only a's labelled pixels count: they give every intersection and a's areas; b's areas are known.
    a_flat, b_flat = labelled_pixels(a, b.small)
    key = a_flat.astype(np.intp)
    key *= span
    key += b_flat
    joint = np.bincount(key, minlength=(top_a + 1) * span)
    keys = np.flatnonzero(joint != 0)  # on the bool mask: ~10x faster than on the int64 counts
    a_ids, cols = keys // span, keys % span
    pairs = (a_ids != 0) & (cols != 0)
    keys, a_ids, cols = keys[pairs], a_ids[pairs], cols[pairs] - 1
    inter = joint[keys]
    area_a = joint.reshape(top_a + 1, span).sum(axis=1)[a_ids]
    b_ids, area_b = b.ids[cols], b.areas[cols]
    iou = inter / (area_a + area_b - inter)
    keep = _best_of_each(a_ids, b_ids, iou) & _best_of_each(b_ids, a_ids, iou) & (iou >= min_iou)
    return a_ids[keep].astype(np.int64), b_ids[keep], iou[keep]


def _best_of_each(ids: np.ndarray, others: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Mask of the pairs that are the best (highest IoU, then lowest other id) of their ``ids`` entry."""
    order = np.lexsort((others, -iou, ids))
    ranked = ids[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = ranked[1:] != ranked[:-1]
    best = np.zeros(order.size, dtype=bool)
    best[order[first]] = True
    return best
