"""Scoring synthetic disc images against their truth (large-image tests of tiles and windows)."""

from __future__ import annotations

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
