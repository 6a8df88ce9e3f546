"""Painting a set of (possibly overlapping) object masks into one label image."""

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
