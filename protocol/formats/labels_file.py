"""What a saved labels file holds, whatever its format: data, names and the world transform."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCORES_KEY = "concept_scores"
"""Label metadata: ``{label_id: score}`` of each instance a concept run wrote (the plugin's Find all
layer metadata; ``sam2-batch --concept``'s label files: the Fiji-ready TIFF's property, the OME-Zarr
root's attributes); a merged instance keeps its highest score."""


def scores_from_metadata(meta: Any) -> dict[int, float]:
    """``meta[SCORES_KEY]`` as ``{label_id: score}``; entries that are not (id >= 1, finite score) are
    dropped."""
    raw = meta.get(SCORES_KEY) if isinstance(meta, dict) else None
    scores: dict[int, float] = {}
    if not isinstance(raw, dict):
        return scores
    for key, value in raw.items():
        try:
            label_id, score = int(key), float(value)
        except (TypeError, ValueError):
            continue
        if label_id >= 1 and math.isfinite(score):
            scores[label_id] = score
    return scores


@dataclass(frozen=True)
class LabelsFile:
    """What a saved labels file holds.

    Attributes:
        data: nD integer labels.
        names: ``{label_id: name}``.
        scale, translate: per-axis world transform (None when unknown).
        units: NGFF unit name per axis (None entries when unknown; None when not stored).
        axes: NGFF axis letters (``"zyx"``...), None when not stored.
        title: a name for the layer (the label image's name in an OME-Zarr), None: the file's.
        scores: a concept run's ``{label_id: score}`` (:data:`SCORES_KEY`), empty for other labels.
    """

    data: np.ndarray = field(repr=False)
    names: dict[int, str]
    scale: tuple[float, ...] | None = None
    translate: tuple[float, ...] | None = None
    units: tuple[str | None, ...] | None = None
    axes: str | None = None
    title: str | None = None
    scores: dict[int, float] = field(default_factory=dict)

    def layer_kwargs(self) -> dict[str, Any]:
        """``scale``, ``translate``, ``units`` and ``axis_labels`` for napari (only those known)."""
        kwargs: dict[str, Any] = {}
        if self.scale is not None:
            kwargs["scale"] = self.scale
        if self.translate is not None:
            kwargs["translate"] = self.translate
        if self.units is not None and any(u is not None for u in self.units):
            kwargs["units"] = tuple(u or "pixel" for u in self.units)
        if self.axes is not None:
            kwargs["axis_labels"] = tuple(self.axes)
        return kwargs
