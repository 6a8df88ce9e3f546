"""Overlaps between two label images: the counting both stitching and linking stand on.

Pure numpy. Arrays are (H, W) integer labels of the same shape, 0 = background.
"""

from __future__ import annotations

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
        keys = np.flatnonzero(counts)
        return (
            (keys // span).astype(np.uint64),
            (keys % span).astype(np.uint64),
            counts[keys].astype(np.int64),
        )
    keys64 = (a_both.astype(np.uint64) << np.uint64(32)) | b_both.astype(np.uint64)
    uniq, found = np.unique(keys64, return_counts=True)
    return uniq >> np.uint64(32), uniq & np.uint64(0xFFFFFFFF), found.astype(np.int64)


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


def mutual_best_matches(a: np.ndarray, b: np.ndarray, min_iou: float) -> list[tuple[int, int, float]]:
    """Label pairs (a_id, b_id, iou) of two same-shaped label arrays that are each other's best match.

    IoU is measured over these arrays only (for tiles: in the overlap of their windows). Ties go to
    the lower id. Pairs are returned by ascending ``a_id``. With small ids (what workers answer) no
    sort: areas, then pairs of the ids present, are counted with ``bincount``.
    """
    top_a, top_b = int(a.max(initial=0)), int(b.max(initial=0))
    if top_a == 0 or top_b == 0:
        return []
    if top_a <= ID_TABLE_FACTOR * a.size + 1024 and top_b <= ID_TABLE_FACTOR * b.size + 1024:
        # Small ids (what workers answer): count areas, renumber the ids present 1..n, count pairs.
        (a_ids_all, a_small, area_a_all), (b_ids_all, b_small, area_b_all) = _compact(a), _compact(b)
        span = b_ids_all.size + 1
        joint = np.bincount((a_small * span + b_small).ravel(), minlength=(a_ids_all.size + 1) * span)
        keys = np.flatnonzero(joint)
        rows, cols = keys // span, keys % span
        pairs = (rows != 0) & (cols != 0)
        keys, rows, cols = keys[pairs], rows[pairs] - 1, cols[pairs] - 1
        a_ids, b_ids, inter = a_ids_all[rows], b_ids_all[cols], joint[keys]
        area_a, area_b = area_a_all[rows], area_b_all[cols]
    else:
        a_ids, b_ids, inter = pair_overlaps(a, b)
        if inter.size == 0:
            return []
        ka, ca = label_areas(a)
        kb, cb = label_areas(b)
        area_a = remap_ids(ka.astype(np.uint64), ca, a_ids)
        area_b = remap_ids(kb.astype(np.uint64), cb, b_ids)
    iou = inter / (area_a + area_b - inter)
    keep = _best_of_each(a_ids, b_ids, iou) & _best_of_each(b_ids, a_ids, iou) & (iou >= min_iou)
    return list(zip(a_ids[keep].tolist(), b_ids[keep].tolist(), iou[keep].tolist(), strict=True))


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids present ascending, labels renumbered 0..n as intp, pixels of each id) of small-id labels."""
    counts = np.bincount(labels.ravel())
    ids = np.flatnonzero(counts[1:]) + 1
    table = np.zeros(counts.size, dtype=np.intp)
    table[ids] = np.arange(1, ids.size + 1)
    return ids, table[labels], counts[ids]


def _best_of_each(ids: np.ndarray, others: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Mask of the pairs that are the best (highest IoU, then lowest other id) of their ``ids`` entry."""
    order = np.lexsort((others, -iou, ids))
    ranked = ids[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = ranked[1:] != ranked[:-1]
    best = np.zeros(order.size, dtype=bool)
    best[order[first]] = True
    return best
