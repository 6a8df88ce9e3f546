"""Synthetic disc images whose right answer is known, and scoring labels against them.

The stand-in worker (``python -m workers --model standin-blobs``) finds each
bright disc exactly when it sees it at full resolution, so tiling, windowing
and stitching are judged on these images by ``bench/bench_large.py`` and the
large-image tests (real SAM2 masks with random weights cannot judge them).
Coordinates are (row, col) pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protocol.geometry.overlaps import label_areas, pair_overlaps


def disc_scores(labels: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Per true disc, the IoU of its best-matching label; and the number of labels matching no disc or
    sharing a disc with another label (duplicates)."""
    t_ids, l_ids, inter = pair_overlaps(truth, labels)
    tk, ta = label_areas(truth)
    lk, la = label_areas(labels)
    t_area = ta[np.searchsorted(tk, t_ids)]
    l_area = la[np.searchsorted(lk, l_ids)]
    iou = inter / (t_area + l_area - inter)
    best = np.zeros(int(truth.max()) + 1)
    np.maximum.at(best, t_ids.astype(np.int64), iou)
    matched = set(l_ids[iou >= 0.5].tolist())
    stray = len(set(lk.tolist()) - matched)
    per_disc = np.bincount(t_ids.astype(np.int64), minlength=int(truth.max()) + 1)[1:]
    duplicates = int((per_disc > 1).sum())
    return best[1:], stray, duplicates


def disc_image(
    shape: tuple[int, int],
    centres: np.ndarray,
    radii: np.ndarray,
    *,
    background: int = 20,
    foreground: int = 200,
    dtype: Any = np.uint8,
) -> tuple[np.ndarray, np.ndarray]:
    """An image of bright discs and its true labels.

    Args:
        shape: (H, W).
        centres: (N, 2) (row, col) disc centres in pixels.
        radii: (N,) radii in pixels; discs must not touch.

    Returns:
        (image of ``dtype`` (H, W), uint32 labels (H, W): disc k has label k + 1).
    """
    image = np.full(shape, background, dtype=dtype)
    truth = np.zeros(shape, dtype=np.uint32)
    for k, ((r, c), rad) in enumerate(zip(centres, radii, strict=True)):
        r0, r1 = max(0, int(r - rad - 1)), min(shape[0], int(r + rad + 2))
        c0, c1 = max(0, int(c - rad - 1)), min(shape[1], int(c + rad + 2))
        rr, cc = np.ogrid[r0:r1, c0:c1]
        inside = (rr + 0.5 - r) ** 2 + (cc + 0.5 - c) ** 2 <= rad**2
        image[r0:r1, c0:c1][inside] = foreground
        truth[r0:r1, c0:c1][inside] = k + 1
    return image, truth


def scattered_discs(
    shape: tuple[int, int],
    *,
    spacing: int = 60,
    radius_range: tuple[float, float] = (6.0, 10.0),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Disc centres on a jittered grid of ``spacing`` px (so many straddle any tile border), and radii.

    Returns:
        (centres (N, 2) (row, col) float64, radii (N,) float64); discs never touch.
    """
    rng = np.random.default_rng(seed)
    rows = np.arange(spacing / 2, shape[0] - spacing / 2, spacing)
    cols = np.arange(spacing / 2, shape[1] - spacing / 2, spacing)
    grid = np.array([(r, c) for r in rows for c in cols], dtype=np.float64)
    jitter = rng.uniform(-spacing / 6, spacing / 6, size=grid.shape)
    radii = rng.uniform(*radius_range, size=len(grid))
    return grid + jitter, radii
