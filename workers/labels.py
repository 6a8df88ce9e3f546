"""Painting a set of (possibly overlapping) object masks into one label image: SAM2's automatic
masks (:func:`paint_labels`) and SAM 3's instances from low-resolution logits (:func:`paint_instances`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def paint_labels(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    """Paint boolean masks into a uint32 label image, largest first.

    Larger objects are painted first, so smaller ones painted later stay
    visible on top of them. Objects left with no visible pixel are dropped
    and the remaining ones are numbered 1..n without gaps, 1 being the
    largest. Ties keep the input order.

    Args:
        masks: bool (H, W) arrays, one per object.
        shape: (H, W) of the label image.

    Returns:
        ``labels``: uint32 (H, W), 0 = background, ids 1..n;
        ``areas``: visible pixel count of label ``i + 1`` at index ``i``.
    """
    height, width = shape
    areas_in = [int(np.count_nonzero(m)) for m in masks]
    order = sorted(range(len(masks)), key=lambda i: -areas_in[i])
    painted = np.zeros((height, width), dtype=np.uint32)
    for rank, index in enumerate(order, start=1):
        mask = np.asarray(masks[index], dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(f"mask {index} has shape {mask.shape}, expected {(height, width)}")
        painted[mask] = rank
    counts = np.bincount(painted.ravel(), minlength=len(order) + 1)
    visible = np.flatnonzero(counts[1:]) + 1
    relabel = np.zeros(len(order) + 1, dtype=np.uint32)
    relabel[visible] = np.arange(1, len(visible) + 1, dtype=np.uint32)
    labels = relabel[painted]
    return labels, [int(counts[i]) for i in visible]


Sources = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A bilinear resize along one axis: per output index the two input indices and the second's weight."""


def _bilinear_sources(out_size: int, in_size: int) -> Sources:
    """The sources of a bilinear resize from ``in_size`` to ``out_size`` along one axis.

    The mapping of ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``:
    source ``(i + 0.5) * in / out - 0.5``, clamped at 0 (float32).

    Returns:
        ``low``, ``high``: int64 (out_size,), input indices (``high`` is ``low + 1`` but at the edge);
        ``weight``: float32 (out_size,), the weight of ``high`` (``low`` gets ``1 - weight``).
    """
    half, scale = np.float32(0.5), np.float32(in_size) / np.float32(out_size)
    source = np.maximum((np.arange(out_size, dtype=np.float32) + half) * scale - half, np.float32(0))
    low = np.minimum(source.astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (source - low).astype(np.float32)


def _output_span(low: np.ndarray, first: int, last: int) -> slice:
    """The output indices whose bilinear sources can touch input indices ``first..last``."""
    start = int(np.searchsorted(low, first - 1, side="left"))
    return slice(start, int(np.searchsorted(low, last, side="right")))


def _resize_window(source: np.ndarray, rows: Sources, cols: Sources) -> np.ndarray:
    """float32 (len(rows), len(cols)) bilinear values of the (h, w) ``source`` at the given sources."""
    row_low, row_high, row_weight = rows
    col_low, col_high, col_weight = cols

    # Columns first on the few low-resolution rows, then rows: the values of torch's bilinear
    # (each output is the row blend of two column blends), with the (R, C) gathers done twice, not four times.
    inputs = np.union1d(row_low, row_high)
    blended = np.zeros((source.shape[0], len(col_low)), np.float32)
    picked = source[inputs]
    blended[inputs] = picked[:, col_low] * (1 - col_weight) + picked[:, col_high] * col_weight
    weight = row_weight[:, None]
    return blended[row_low] * (1 - weight) + blended[row_high] * weight


def paint_instances(
    mask_logits: np.ndarray, scores: np.ndarray, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """One label image from low-resolution instance masks, each painted within its bounding box.

    Each mask is resized bilinearly to (H, W) (as ``torch.nn.functional.interpolate`` with
    ``align_corners=False``) only inside the window its positive logits can reach, narrowed to
    the part no higher-scored instance has painted, so the work is O(sum of those windows'
    areas), not O(instances x H x W).

    Args:
        mask_logits: float (n, h, w) low-resolution mask logits (> 0: inside), instances in
            decreasing score.
        scores: float32 (n,), decreasing.
        hw: (H, W) of the image sent.

    Returns:
        uint32 (H, W) labels (instance ``i`` -> label ``i + 1`` after dropping instances left without
        pixels; higher scores win overlaps) and the float32 scores of the labels kept.
    """
    logits = np.asarray(mask_logits, dtype=np.float32)
    labels = np.zeros(hw, dtype=np.uint32)
    kept: list[float] = []
    all_rows = _bilinear_sources(hw[0], logits.shape[1])
    all_cols = _bilinear_sources(hw[1], logits.shape[2])
    inside = logits > 0
    for index in range(logits.shape[0]):
        rows = np.flatnonzero(inside[index].any(axis=1))
        if not rows.size:
            continue  # no positive logit: a convex resize has no positive value either
        cols = np.flatnonzero(inside[index].any(axis=0))
        row_span = _output_span(all_rows[0], int(rows[0]), int(rows[-1]))
        col_span = _output_span(all_cols[0], int(cols[0]), int(cols[-1]))
        # only where no higher-scored instance painted yet (SAM 3's duplicates cover earlier ones)
        unpainted = labels[row_span, col_span] == 0
        free_rows, free_cols = np.flatnonzero(unpainted.any(axis=1)), np.flatnonzero(unpainted.any(axis=0))
        if not free_rows.size:
            continue
        row_span = slice(row_span.start + int(free_rows[0]), row_span.start + int(free_rows[-1]) + 1)
        col_span = slice(col_span.start + int(free_cols[0]), col_span.start + int(free_cols[-1]) + 1)
        values = _resize_window(
            logits[index],
            (all_rows[0][row_span], all_rows[1][row_span], all_rows[2][row_span]),
            (all_cols[0][col_span], all_cols[1][col_span], all_cols[2][col_span]),
        )
        window = labels[row_span, col_span]
        free = (values > 0) & (window == 0)
        if free.any():
            kept.append(float(scores[index]))
            window[free] = len(kept)
    return labels, np.asarray(kept, dtype=np.float32)
