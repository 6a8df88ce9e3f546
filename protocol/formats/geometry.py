"""Where a labels array sits in the world: axis names, pixel size, origin and units.

napari gives a layer ``scale`` and ``translate`` per axis (world = index x
scale + translate, index at the pixel centre), ``units`` (napari >= 0.5,
pint units; ``pixel`` when unknown) and ``axis_labels``. The formats need the
same facts named their own way: NGFF axes ``t``/``c``/``z``/``y``/``x`` with
UDUNITS-2 unit names, ImageJ's ``unit``/``spacing``/``finterval``, QuPath's
pixel size. :class:`Geometry` holds them once, in the array's axis order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SPACE_AXES = ("z", "y", "x")
TIME_AXIS = "t"
CHANNEL_AXIS = "c"
DEFAULT_AXES = {2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}
"""Axis names by number of dimensions when the layer does not name them (NGFF order)."""

LENGTH_UNITS = {
    "angstrom": "angstrom",
    "nanometer": "nanometer",
    "nm": "nanometer",
    "micrometer": "micrometer",
    "micron": "micrometer",
    "um": "micrometer",
    "µm": "micrometer",
    "millimeter": "millimeter",
    "mm": "millimeter",
    "centimeter": "centimeter",
    "cm": "centimeter",
    "meter": "meter",
    "m": "meter",
}
TIME_UNITS = {
    "millisecond": "millisecond",
    "ms": "millisecond",
    "second": "second",
    "s": "second",
    "sec": "second",
    "minute": "minute",
    "min": "minute",
    "hour": "hour",
    "h": "hour",
}
"""Unit spellings we understand, mapped to their UDUNITS-2 (NGFF) names."""

SECONDS_PER = {"millisecond": 1e-3, "second": 1.0, "minute": 60.0, "hour": 3600.0}
METRES_PER = {
    "angstrom": 1e-10,
    "nanometer": 1e-9,
    "micrometer": 1e-6,
    "millimeter": 1e-3,
    "centimeter": 1e-2,
    "meter": 1.0,
}
"""Every length unit of :data:`LENGTH_UNITS`, in metres (to convert between them)."""
IMAGEJ_LENGTH = {"micrometer": "micron", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm"}
"""ImageJ's spelling of a length unit (Fiji shows ``micron`` as µm)."""


def unit_name(unit: Any) -> str | None:
    """The NGFF name of a length or time unit (pint unit or text), None when unknown or ``pixel``."""
    if unit is None:
        return None
    text = str(unit).strip()
    key = text if text in LENGTH_UNITS or text in TIME_UNITS else text.lower()
    return LENGTH_UNITS.get(key) or TIME_UNITS.get(key)


def axes_for(ndim: int, axis_labels: Sequence[str] | None = None) -> str:
    """NGFF axis names for an ``ndim`` array: the layer's own labels when they are NGFF names, else a default.

    Raises:
        ValueError: ``ndim`` outside 2..5 without usable axis labels (NGFF holds 2 to 5 axes).
    """
    if axis_labels is not None and len(axis_labels) == ndim:
        names = "".join(_axis_letter(label) for label in axis_labels)
        if len(names) == ndim and len(set(names)) == ndim and _ngff_order(names):
            return names
    if ndim not in DEFAULT_AXES:
        raise ValueError(f"labels with {ndim} dimensions: NGFF and ImageJ hold 2 to 5 (t, c, z, y, x)")
    return DEFAULT_AXES[ndim]


def _axis_letter(label: str) -> str:
    text = str(label).strip().lower()
    aliases = {"time": "t", "frame": "t", "channel": "c", "slice": "z", "row": "y", "col": "x", "column": "x"}
    text = aliases.get(text, text)
    return text if text in ("t", "c", "z", "y", "x") else "?"


def _ngff_order(names: str) -> bool:
    order = "tczyx"
    return "?" not in names and names.endswith("yx") and list(names) == sorted(names, key=order.index)


@dataclass(frozen=True)
class Geometry:
    """Axis names, pixel size, origin and units of an nD labels array, in its axis order.

    Attributes:
        axes: one NGFF letter per axis (``t``, ``c``, ``z``, ``y``, ``x``), e.g. ``"zyx"``.
        scale: world size of one pixel along each axis (napari's ``scale``).
        translate: world position of the centre of pixel 0 along each axis.
        units: NGFF unit name per axis (``micrometer``, ``second``...), None when unknown.
    """

    axes: str
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    units: tuple[str | None, ...]

    def __post_init__(self) -> None:
        n = len(self.axes)
        if not (len(self.scale) == len(self.translate) == len(self.units) == n):
            raise ValueError("axes, scale, translate and units need one entry per axis")
        if not all(math.isfinite(s) and s > 0 for s in self.scale):
            raise ValueError(f"pixel sizes must be positive, got {self.scale}")

    @classmethod
    def plain(cls, ndim: int) -> Geometry:
        """Pixel units: scale 1, origin 0, no units."""
        axes = axes_for(ndim)
        return cls(axes, (1.0,) * ndim, (0.0,) * ndim, (None,) * ndim)

    @classmethod
    def from_layer(
        cls,
        ndim: int,
        scale: Sequence[float] | None = None,
        translate: Sequence[float] | None = None,
        units: Sequence[Any] | None = None,
        axis_labels: Sequence[str] | None = None,
    ) -> Geometry:
        """From a napari layer's ``scale``, ``translate``, ``units`` and ``axis_labels`` (any may be None)."""
        axes = axes_for(ndim, axis_labels)
        known = scale is not None and len(scale) == ndim
        scale_t = tuple(float(s) for s in scale) if scale is not None and known else (1.0,) * ndim
        shift = (
            tuple(float(t) for t in translate)
            if translate is not None and len(translate) == ndim
            else (0.0,) * ndim
        )
        names = [unit_name(u) for u in units] if units is not None and len(units) == ndim else [None] * ndim
        if axes == DEFAULT_AXES.get(ndim):
            axes = time_from_units(axes, names)
        checked = tuple(_unit_for_axis(axis, name) for axis, name in zip(axes, names, strict=True))
        return cls(axes, scale_t, shift, checked)

    @property
    def ndim(self) -> int:
        return len(self.axes)

    def index(self, axis: str) -> int | None:
        """Position of NGFF axis ``axis`` (``"z"``...), None when absent."""
        found = self.axes.find(axis)
        return None if found < 0 else found

    def size(self, axis: str) -> float:
        """Pixel size along ``axis`` (1.0 when absent)."""
        i = self.index(axis)
        return 1.0 if i is None else self.scale[i]

    def origin(self, axis: str) -> float:
        """World position of the centre of pixel 0 along ``axis`` (0.0 when absent)."""
        i = self.index(axis)
        return 0.0 if i is None else self.translate[i]

    def unit(self, axis: str) -> str | None:
        i = self.index(axis)
        return None if i is None else self.units[i]

    @property
    def length_unit(self) -> str | None:
        """The unit of the image plane (``y`` and ``x``), None when unknown or they differ."""
        y, x = self.unit("y"), self.unit("x")
        return y if y == x else None

    def napari_kwargs(self) -> dict[str, Any]:
        """``scale``, ``translate``, ``axis_labels`` and (when known) ``units`` for a napari layer
        (the plugin's calibrated-TIFF reader, :mod:`plugin.calibration`)."""
        kwargs: dict[str, Any] = {"scale": self.scale, "translate": self.translate}
        if any(u is not None for u in self.units):
            kwargs["units"] = tuple(u or "pixel" for u in self.units)
        kwargs["axis_labels"] = tuple(self.axes)
        return kwargs


def _unit_for_axis(axis: str, name: str | None) -> str | None:
    if name is None or axis == CHANNEL_AXIS:
        return None
    if axis == TIME_AXIS:
        return name if name in SECONDS_PER else None
    return name if name in LENGTH_UNITS.values() else None


def time_from_units(axes: str, units: Sequence[Any]) -> str:
    """A default ``zyx`` becomes ``tyx`` when the first axis's unit is a time unit."""
    if axes == "zyx" and len(units) == 3 and unit_name(units[0]) in SECONDS_PER:
        return "tyx"
    return axes
