"""Names of labels ("cell nucleus") and where to draw them.

Pure numpy. Names live in a labels layer's ``metadata["label_names"]`` as
``{label_id: name}`` (ids are ints in memory; JSON turns them into strings,
:func:`names_from_metadata` accepts both) and are mirrored into the
layer's ``features`` table (columns ``index`` and ``name``) so napari's
status bar shows the name under the cursor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from plugin.labels.metadata_entries import label_entries

METADATA_KEY = "label_names"


def clean_name(name: str) -> str:
    """A name without surrounding spaces or line breaks (they break the CSV and the overlay)."""
    return " ".join(str(name).split())


def names_from_metadata(metadata: Mapping[str, Any] | None) -> dict[int, str]:
    """``{label_id: name}`` from layer metadata (missing or malformed entries are skipped)."""
    names: dict[int, str] = {}
    for label_id, value in label_entries(metadata, METADATA_KEY):
        name = clean_name(value) if isinstance(value, str) else ""
        if name:
            names[label_id] = name
    return names


def with_name(names: Mapping[int, str], label_id: int, name: str) -> dict[int, str]:
    """A copy of ``names`` with ``label_id`` named ``name`` (an empty name removes it)."""
    if int(label_id) <= 0:
        raise ValueError("label 0 is the background and cannot be named")
    out = dict(names)
    cleaned = clean_name(name)
    if cleaned:
        out[int(label_id)] = cleaned
    else:
        out.pop(int(label_id), None)
    return dict(sorted(out.items()))


def features_table(names: Mapping[int, str]) -> dict[str, list[Any]]:
    """Columns for ``layer.features``: ``index`` (label id) and ``name``, sorted by id."""
    ids = sorted(names)
    return {"index": ids, "name": [names[i] for i in ids]}


def label_anchors(labels: np.ndarray, ids: list[int]) -> dict[int, tuple[float, float]]:
    """Where to draw each label's name on a 2D slice.

    The anchor is the region's centroid, or, when the centroid falls outside
    the region (a crescent, a ring), the region pixel nearest to it.

    Args:
        labels: (H, W) integer labels of one slice.
        ids: label ids to place; ids absent from the slice are left out.

    Returns:
        ``{label_id: (row, col)}`` in slice pixel coordinates.
    """
    if not ids or labels.size == 0:
        return {}
    wanted = np.asarray(sorted(set(ids)), dtype=np.int64)
    flat = labels.ravel()
    hit = np.isin(flat, wanted)
    where = np.flatnonzero(hit)
    if where.size == 0:
        return {}
    values = flat[where].astype(np.int64)
    present, inverse = np.unique(values, return_inverse=True)
    rows, cols = np.divmod(where, labels.shape[1])
    counts = np.bincount(inverse)
    mean_r = np.bincount(inverse, weights=rows) / counts
    mean_c = np.bincount(inverse, weights=cols) / counts
    anchors: dict[int, tuple[float, float]] = {}
    for k, label_id in enumerate(present):
        r, c = float(mean_r[k]), float(mean_c[k])
        ri, ci = int(round(r)), int(round(c))
        if labels[ri, ci] != label_id:
            mine = inverse == k
            d2 = (rows[mine] - r) ** 2 + (cols[mine] - c) ** 2
            best = int(np.argmin(d2))
            r, c = float(rows[mine][best]), float(cols[mine][best])
        anchors[int(label_id)] = (r, c)
    return anchors
