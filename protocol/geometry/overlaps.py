"""Overlaps between two label images: the counting both stitching and linking stand on.

Pure numpy. Arrays are (H, W) integer labels of the same shape, 0 = background.
"""

from __future__ import annotations

import numpy as np


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


def remap_ids(keys: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
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
    area_a = remap_ids(ka.astype(np.uint64), ca, a_ids)
    area_b = remap_ids(kb.astype(np.uint64), cb, b_ids)
    iou = inter / (area_a + area_b - inter)
    best_for_a: dict[int, tuple[float, int]] = {}
    best_for_b: dict[int, tuple[float, int]] = {}
    for x, y, v in zip(a_ids.tolist(), b_ids.tolist(), iou.tolist(), strict=True):
        if v > best_for_a.get(x, (-1.0, 0))[0]:
            best_for_a[x] = (v, y)
        if v > best_for_b.get(y, (-1.0, 0))[0]:
            best_for_b[y] = (v, x)
    return [(x, y, v) for x, (v, y) in best_for_a.items() if v >= min_iou and best_for_b[y][1] == x]
