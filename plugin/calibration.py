"""Image calibration (pixel size, unit, z spacing) from TIFF files: kept on open, offered when lost,
checked on export (issue 23, item 3).

No Qt. napari's built-in reader drops the pixel size of an ImageJ or OME
TIFF, and then every µm export downstream is wrong. Here:

* :func:`read_calibrated_tiff` is the plugin's image reader (npe2, through
  :func:`plugin.io_hooks.get_reader`) for TIFFs that carry a pixel size: the
  first series as one image layer (one per channel for a channel axis; RGB
  for colour samples) with ``scale``, ``units`` and ``axis_labels`` from
  :mod:`protocol.formats.tiff_geometry` (ImageJ's ``unit``/resolution/
  ``spacing``, OME's ``PhysicalSizeX/Y/Z``). TIFFs without one are left to
  napari's reader.
* :func:`missing_calibration` / :func:`apply_calibration`: an image layer shown
  in pixels (scale 1 in y and x) whose source file carries a pixel size, and
  the fix; :class:`CalibrationOffers` warns once per layer with an **Apply**
  action on the notification.
* :func:`export_calibration_warning`: the export is about to write physical
  units that are not (a layer with a length unit but 1-unit pixels, or
  uncalibrated labels over an image that is calibrated).

Arrays: the reader returns the first series as the file stores it (read
whole: a file larger than memory needs a pyramid format such as OME-Zarr),
with a channel axis moved after ``T`` so its axes are an NGFF order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from plugin.export import TIFF_SUFFIXES
from plugin.export_large import read_lazily
from protocol.formats.geometry import METRES_PER, Geometry, unit_name
from protocol.formats.tiff_geometry import geometry_from, pixel_sizes
from protocol.formats.tiled_tiff import open_tiled_tiff

LayerData = tuple[Any, dict[str, Any], str]


def _ngff_axes(series_axes: str) -> str:
    """The series' axes with a channel axis ``C`` moved to its NGFF place (after ``T``, before ``Z``)."""
    axes = series_axes.upper()
    if "C" not in axes or axes.endswith("C"):
        return axes
    rest = axes.replace("C", "")
    at = 1 if rest.startswith("T") else 0
    return rest[:at] + "C" + rest[at:]


def file_calibration(path: str | os.PathLike[str] | None) -> Geometry | None:
    """The geometry of the image in a TIFF that carries a pixel size (axes in NGFF order, colour samples
    dropped); None for another file, a TIFF without a pixel size, or one that cannot be read."""
    if not path:
        return None
    p = Path(path)
    if p.suffix.lower() not in TIFF_SUFFIXES or not p.is_file():
        return None
    try:
        with tifffile.TiffFile(p) as tif:
            sizes = pixel_sizes(tif)
            axes = tif.series[0].axes
    except (OSError, ValueError, IndexError, tifffile.TiffFileError):
        return None
    if not sizes:
        return None
    try:
        return geometry_from(sizes, _ngff_axes(axes))
    except ValueError:
        return None


def read_calibrated_tiff(path: str | list[str]) -> list[LayerData]:
    """npe2 reader: the TIFF's first series as image layer(s) with its pixel size, unit and z spacing.

    Returns:
        One ``(data, kwargs, "image")``: ``data`` as stored (e.g. uint16 (Z, Y, X); a tiled BigTIFF
        above the memory budget as a zarr array read tile by tile), a channel axis
        moved to NGFF order and named by ``channel_axis`` (napari then makes one layer per channel,
        each with the calibration of the other axes); ``rgb`` for 3 or 4 colour samples.
    """
    target = Path(str(path[0] if isinstance(path, list) else path))
    with tifffile.TiffFile(target) as tif:
        series = tif.series[0]
        axes, sizes = series.axes.upper(), pixel_sizes(tif)
        ordered = _ngff_axes(axes)
        lazy = ordered == axes and read_lazily(tif)  # e.g. sam2-batch's labels beyond its budget
        data = open_tiled_tiff(target) if lazy else series.asarray()
    if ordered != axes:
        data = np.moveaxis(data, axes.index("C"), ordered.index("C"))
    geometry = geometry_from(sizes, ordered)
    kwargs: dict[str, Any] = {"name": target.stem, **geometry.napari_kwargs()}
    kwargs["rgb"] = ordered.endswith("S") and data.shape[-1] in (3, 4)
    channel = geometry.index("c")
    if channel is not None:
        kwargs["channel_axis"] = channel
        for key in ("scale", "translate", "units", "axis_labels"):
            if key in kwargs:
                kwargs[key] = tuple(v for i, v in enumerate(kwargs[key]) if i != channel)
    return [(data, kwargs, "image")]


def _plane_scale(layer: Any) -> tuple[float, float]:
    return float(layer.scale[-2]), float(layer.scale[-1])


def _is_length(unit: Any) -> bool:
    return unit_name(unit) in METRES_PER


def layer_is_calibrated(layer: Any) -> bool:
    """Whether a layer's image plane has a pixel size (not 1, or a length unit)."""
    units = list(getattr(layer, "units", None) or [])
    has_unit = len(units) >= 2 and all(_is_length(u) for u in units[-2:])
    return has_unit or any(not math.isclose(s, 1.0) for s in _plane_scale(layer))


def missing_calibration(layer: Any) -> Geometry | None:
    """The source file's geometry when an image layer shows in pixels (scale 1 in y and x, no length
    unit) but the file it was opened from carries a pixel size; else None."""
    if layer_is_calibrated(layer):
        return None
    path = getattr(getattr(layer, "source", None), "path", None)
    return file_calibration(path)


def apply_calibration(layer: Any, geometry: Geometry) -> None:
    """Give ``layer`` the file's pixel size and units, matching axes from the last (x, y, then z)."""
    scale, units = list(layer.scale), list(getattr(layer, "units", None) or ["pixel"] * layer.ndim)
    matched = min(layer.ndim, geometry.ndim)
    for k in range(1, matched + 1):
        if geometry.axes[-k] not in "zyx" or (k > 2 and layer.ndim != geometry.ndim):
            break
        scale[-k] = geometry.scale[-k]
        units[-k] = geometry.units[-k] or "pixel"
    layer.scale = scale
    layer.units = units


def describe(geometry: Geometry) -> str:
    """``0.5 µm pixels`` or ``0.5 x 0.25 µm pixels, z spacing 2 µm``."""
    unit = (geometry.length_unit or "pixel").replace("micrometer", "µm")
    sy, sx = geometry.size("y"), geometry.size("x")
    text = f"{sx:g} {unit} pixels" if math.isclose(sy, sx) else f"{sx:g} x {sy:g} {unit} pixels"
    if geometry.index("z") is not None and geometry.unit("z") is not None:
        text += f", z spacing {geometry.size('z'):g} {(geometry.unit('z') or '').replace('micrometer', 'µm')}"
    return text


class CalibrationOffers:
    """Warn once per image layer shown in pixels whose file has a pixel size; the warning offers to
    apply it (an **Apply** action on the notification).

    Args:
        notify: shows ``(message, actions)``; ``actions`` is a sequence of ``(name, callback)`` pairs
            (napari's ``Notification`` actions; each callback gets the notification toast).
    """

    def __init__(self, notify: Callable[[str, Sequence[tuple[str, Callable[[Any], None]]]], None]) -> None:
        self._notify = notify
        self._seen: set[tuple[int, str]] = set()

    def check(self, layer: Any) -> bool:
        """Look at ``layer`` (an image layer); True when it warned now."""
        path = str(getattr(getattr(layer, "source", None), "path", None) or "")
        key = (id(layer), path)
        if not path or key in self._seen:
            return False
        geometry = missing_calibration(layer)
        if geometry is None:
            return False
        self._seen.add(key)
        message = (
            f"{layer.name} is shown in pixels, but {Path(path).name} has {describe(geometry)}: "
            "measurements and exports would be in pixels. Apply the file's calibration "
            "(or open the file with File > Open, choosing SAM2 Segmentation)."
        )
        self._notify(message, [("Apply", lambda _toast: apply_calibration(layer, geometry))])
        return True


def napari_offer(message: str, actions: Sequence[tuple[str, Callable[[Any], None]]]) -> None:
    """Show a napari warning with ``actions`` (buttons on the toast)."""
    from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

    notification_manager.dispatch(Notification(message, NotificationSeverity.WARNING, actions=tuple(actions)))


def export_calibration_warning(labels: Any, image: Any | None) -> str | None:
    """Why an export's physical units may be wrong, or None.

    * the labels say a length unit (µm...) but their pixels are 1 unit: probably never calibrated;
    * the labels are in pixels but the image of their shape (``image``, or its source file) has a
      pixel size: the export would be in pixels, not in the image's units.
    """
    units = list(getattr(labels, "units", None) or [])
    plane_units = units[-2:] if len(units) >= 2 else []
    ones = all(math.isclose(s, 1.0) for s in _plane_scale(labels))
    if plane_units and all(_is_length(u) for u in plane_units) and ones:
        unit = str(plane_units[-1]).replace("micrometer", "µm")
        return (
            f"{labels.name} says its pixels are 1 {unit}: if that is not its real pixel size, "
            "every length, area and physical coordinate in the export is wrong. Set the layer's scale "
            "(or open the image with the SAM2 Segmentation reader, which keeps a TIFF's calibration)."
        )
    if image is None or layer_is_calibrated(labels):
        return None
    if layer_is_calibrated(image):
        sy, sx = _plane_scale(image)
        where = f"the image {image.name} has {sx:g} x {sy:g} {getattr(image, 'units', [''])[-1]} pixels"
    else:
        geometry = missing_calibration(image)
        if geometry is None:
            return None
        where = f"the file of {image.name} has {describe(geometry)}"
    return (
        f"{labels.name} is in pixels, but {where}: the export is in pixels. "
        "Give the labels the image's scale first to export physical units."
    )
