"""What a saved labels file holds, whatever its format: data, names and the world transform."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
    """

    data: np.ndarray = field(repr=False)
    names: dict[int, str]
    scale: tuple[float, ...] | None = None
    translate: tuple[float, ...] | None = None
    units: tuple[str | None, ...] | None = None
    axes: str | None = None
    title: str | None = None

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
