"""The pixel size a TIFF carries, as the :class:`Geometry` of labels made from it.

Microscopy TIFFs state their calibration in one of three places; the first
found wins:

1. **ImageJ** (Fiji's TIFFs): X/Y resolution in pixels per ``unit`` of the
   description, ``spacing`` (z step) and ``finterval`` (per frame, in ``tunit``);
   read through :func:`protocol.formats.imagej.calibration`.
2. **OME-TIFF**: ``Pixels`` ``PhysicalSizeX/Y/Z`` (+ ``...Unit``, default µm)
   and ``TimeIncrement`` (+ unit, default s) of the first image.
3. **Resolution tags** in centimetres, millimetres or inches (a scanner's
   dpi), converted to micrometres. 72 and 96 dpi are what image editors write
   when they know nothing, so they are left alone.

Without any of them, or with a unit we do not know, the axes stay in pixel
units (scale 1, unit None). The geometry covers the labels of the first
series: its axes without colour samples (a last ``S`` axis), in the file's order.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

import tifffile

from protocol.formats.geometry import METRES_PER, Geometry, axes_for, unit_name
from protocol.formats.imagej import calibration

PLACEHOLDER_DPI = (72.0, 96.0)
"""Inch resolutions written by software that knows no pixel size."""
TIFF_RESOLUTION_UNITS = {2: "inch", 3: "centimeter", 4: "millimeter", 5: "micrometer"}
"""TIFF ResolutionUnit values (4 and 5 are tifffile's extensions) and their length unit."""
_INCH_M = 0.0254


def _length(value: Any, unit: Any) -> tuple[float, str] | None:
    """``(size, NGFF unit)`` for a positive size in a unit we know, else None."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return None
    text = str(unit).replace("\\u00B5", "\u00b5").replace("\u03bc", "\u00b5") if unit is not None else None
    name = unit_name(text)
    if name is None or name not in METRES_PER or not size > 0:
        return None
    return size, name


def _time(value: Any, unit: Any) -> tuple[float, str] | None:
    try:
        size = float(value)
    except (TypeError, ValueError):
        return None
    name = unit_name(unit) if unit is not None else None
    if name is None or name in METRES_PER or not size > 0:
        return None
    return size, name


def _from_imagej(tif: tifffile.TiffFile) -> dict[str, tuple[float, str]]:
    meta = tif.imagej_metadata or {}
    try:
        cal = calibration(tif)
    except (KeyError, ZeroDivisionError, TypeError):
        return {}
    unit = cal.get("unit")
    found = {"x": _length(cal["pixel_width"], unit), "y": _length(cal["pixel_height"], unit)}
    found["z"] = _length(cal.get("spacing"), unit)
    found["t"] = _time(cal.get("finterval"), meta.get("tunit") or "second")
    return {axis: size for axis, size in found.items() if size is not None}


def _from_ome(tif: tifffile.TiffFile) -> dict[str, tuple[float, str]]:
    try:
        root = ET.fromstring(tif.ome_metadata or "")
    except ET.ParseError:
        return {}
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return {}
    attrs = pixels.attrib
    found = {
        axis: _length(
            attrs.get(f"PhysicalSize{axis.upper()}"), attrs.get(f"PhysicalSize{axis.upper()}Unit", "µm")
        )
        for axis in "xyz"
    }
    found["t"] = _time(attrs.get("TimeIncrement"), attrs.get("TimeIncrementUnit", "s"))
    return {axis: size for axis, size in found.items() if size is not None}


def _from_resolution(tif: tifffile.TiffFile) -> dict[str, tuple[float, str]]:
    tags = tif.pages.first.tags
    if "XResolution" not in tags or "YResolution" not in tags or "ResolutionUnit" not in tags:
        return {}
    unit = TIFF_RESOLUTION_UNITS.get(int(tags["ResolutionUnit"].value))
    if unit is None:
        return {}
    per_unit = []
    for name in ("XResolution", "YResolution"):
        numerator, denominator = tags[name].value
        per_unit.append(numerator / denominator if numerator > 0 and denominator > 0 else 0.0)
    if not all(per_unit) or (unit == "inch" and all(r in PLACEHOLDER_DPI for r in per_unit)):
        return {}
    metres = _INCH_M if unit == "inch" else METRES_PER[unit]
    to_um = metres / METRES_PER["micrometer"]
    return {axis: (to_um / r, "micrometer") for axis, r in zip("xy", per_unit, strict=True)}


def pixel_sizes(tif: tifffile.TiffFile) -> dict[str, tuple[float, str]]:
    """``{axis: (size, NGFF unit)}`` for the axes ``x``, ``y``, ``z``, ``t`` the TIFF calibrates."""
    if tif.is_imagej:
        found = _from_imagej(tif)
        if found:
            return found
    if tif.is_ome:
        found = _from_ome(tif)
        if found:
            return found
    return _from_resolution(tif)


def _letters(series_axes: str) -> str:
    """NGFF letters of the label axes: colour samples last (``S``) dropped, unknown axes ``?``."""
    axes = series_axes.upper()
    axes = axes[:-1] if axes.endswith("S") else axes
    letters = {"T": "t", "C": "c", "Z": "z", "Y": "y", "X": "x"}
    return "".join(letters.get(a, "?") for a in axes)


def geometry_from(sizes: Mapping[str, tuple[float, str]], series_axes: str) -> Geometry:
    """The labels' geometry for the first series' axes (``"TZYX"``, ``"YXS"``...) and the sizes found.

    Axes that are not an NGFF order (``QYX``, ImageJ's ``TZCYX``...) keep only
    the pixel size of y and x; the others stay in pixel units.

    Raises:
        ValueError: more than 5 axes, or fewer than 2 (no NGFF/ImageJ form).
    """
    letters = _letters(series_axes)
    ndim = len(letters)
    axes = axes_for(ndim, list(letters))
    usable = axes == letters
    scale: list[float] = [1.0] * ndim
    units: list[str | None] = [None] * ndim
    for i, axis in enumerate(axes):
        if axis in sizes and (usable or i >= ndim - 2):
            scale[i], units[i] = sizes[axis]
    return Geometry.from_layer(ndim, scale, None, units, list(axes))


def tiff_geometry(tif: tifffile.TiffFile) -> Geometry:
    """The geometry of labels made from the TIFF's first series (see the module docstring).

    Raises:
        ValueError: a series with more than 5 or fewer than 2 axes besides colour.
    """
    return geometry_from(pixel_sizes(tif), tif.series[0].axes)
