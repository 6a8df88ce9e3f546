"""The Labels tab's Export box: save a labels layer with its names in the format of the next tool.

**Export as** chooses one of :data:`EXPORT_CHOICES`: TIFF for Fiji (+ names
JSON and CSV), OME-Zarr, GeoJSON for QuPath (pixel coordinates) or for GIS
tools (physical coordinates), or the measurements CSV (mean intensity of the
image layer of the same shape, when there is one). **Export…** asks where;
the dialog opens in the folder the labels or their image came from, else the
home folder. The writing is :func:`plugin.export.export_labels` (the same
code as ``File > Save Selected Layers`` and ``sam2-batch --format``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from napari.layers import Image, Labels
from qtpy.QtWidgets import QComboBox, QFileDialog, QGroupBox, QHBoxLayout, QWidget

from plugin._qt.qt_helpers import button
from plugin.export import GEOJSON, MEASUREMENTS, OME_ZARR, TIFF, ExportFormat, export_labels
from plugin.jobs.controller import napari_notify
from plugin.labels.names import names_from_metadata
from plugin.labels.pyramid import label_data
from protocol.formats.geojson import PHYSICAL, PIXEL

if TYPE_CHECKING:
    import napari


@dataclass(frozen=True)
class ExportChoice:
    """One entry of the Export box.

    Attributes:
        key: how tests and code choose it (the format's key, ``geojson-physical`` for the second GeoJSON).
        title: what the box shows.
        fmt: the format written.
        coordinates: GeoJSON ``pixel`` or ``physical`` coordinates (ignored by the other formats).
    """

    key: str
    title: str
    fmt: ExportFormat
    coordinates: str = PIXEL


EXPORT_CHOICES = (
    ExportChoice(TIFF.key, TIFF.title, TIFF),
    ExportChoice(OME_ZARR.key, OME_ZARR.title, OME_ZARR),
    ExportChoice(GEOJSON.key, "GeoJSON for QuPath (pixel coordinates)", GEOJSON),
    ExportChoice("geojson-physical", "GeoJSON for GIS (physical coordinates)", GEOJSON, PHYSICAL),
    ExportChoice(MEASUREMENTS.key, MEASUREMENTS.title, MEASUREMENTS),
)
CHOICES_BY_KEY = {choice.key: choice for choice in EXPORT_CHOICES}


def matching_image(viewer: napari.Viewer, layer: Labels) -> Image | None:
    """The image layer of the labels' shape (the active one first), for mean intensities; None if none."""
    shape = tuple(layer.data.shape)
    images = [x for x in viewer.layers if isinstance(x, Image) and not x.multiscale]
    active = viewer.layers.selection.active
    ordered = ([active] if active in images else []) + [x for x in images if x is not active]
    return next((x for x in ordered if tuple(x.data.shape[: len(shape)]) == shape), None)


def export_folder(viewer: napari.Viewer, layer: Labels) -> Path:
    """Where the export dialog opens: the folder of the file the labels or their image came from, else home.

    The labels layer's own file first, then the image of its shape
    (:func:`matching_image`), then any image opened from a file.
    """
    images = [x for x in viewer.layers if isinstance(x, Image)]
    first = matching_image(viewer, layer)
    for candidate in [layer, first, *images]:
        path = getattr(getattr(candidate, "source", None), "path", None)
        if path and Path(path).parent.is_dir():
            return Path(path).parent
    return Path.home()


def export_layer(
    layer: Labels,
    path: str | Path,
    fmt: str = TIFF.key,
    image: Image | None = None,
    coordinates: str = PIXEL,
) -> list[Path]:
    """Save ``layer`` with its names as ``fmt`` (atomically); return the paths written.

    Args:
        layer: the labels layer (names from its metadata; scale, translate, units, axis labels).
        path: where (the format's suffix is added when missing).
        fmt: a key of :data:`plugin.export.EXPORT_FORMATS`.
        image: intensities for the measurements CSV (same shape as the labels, or plus colour).
        coordinates: GeoJSON ``pixel`` or ``physical`` coordinates.
    """
    return export_labels(
        fmt,
        path,
        label_data(layer),
        names_from_metadata(layer.metadata),
        scale=layer.scale,
        translate=layer.translate,
        units=getattr(layer, "units", None),
        axis_labels=getattr(layer, "axis_labels", None),
        image=None if image is None else image.data,
        coordinates=coordinates,
        title=layer.name,
    )


class ExportBox(QGroupBox):
    """Choose a format, press Export…: the labels layer ``layer_of()`` gives is saved there."""

    def __init__(
        self,
        viewer: napari.Viewer,
        layer_of: Callable[[], Labels | None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Export", parent)
        self.viewer = viewer
        self.layer_of = layer_of
        row = QHBoxLayout(self)
        self.format_combo = QComboBox()
        for choice in EXPORT_CHOICES:
            self.format_combo.addItem(choice.title, choice.key)
        self.format_combo.setToolTip(
            "Also File > Save Selected Layers, by extension: .tif, .ome.zarr, .geojson (pixels), .csv"
        )
        self.export_button = button(
            "Export…", self.export_dialog, "Save the listed labels layer with its names"
        )
        row.addWidget(self.format_combo, 1)
        row.addWidget(self.export_button)

    def choice(self) -> ExportChoice:
        """The chosen entry of :data:`EXPORT_CHOICES`."""
        return CHOICES_BY_KEY[str(self.format_combo.currentData())]

    def set_choice(self, key: str) -> None:
        """Choose the entry ``key`` of :data:`CHOICES_BY_KEY` (``geojson-physical``...)."""
        index = self.format_combo.findData(key)
        if index < 0:
            raise ValueError(f"unknown export choice {key!r}; choose one of {', '.join(CHOICES_BY_KEY)}")
        self.format_combo.setCurrentIndex(index)

    def export_dialog(self) -> None:
        """Ask where (starting in the labels' or image's folder), then export."""
        layer = self.layer_of()
        if layer is None:
            napari_notify("warning", "Export: choose a labels layer first.")
            return
        chosen = self.choice()
        start = export_folder(self.viewer, layer) / f"{layer.name}{chosen.fmt.suffix}"
        path, _ = QFileDialog.getSaveFileName(
            self, f"Export labels: {chosen.title}", str(start), chosen.fmt.file_filter
        )
        if path:
            self.export(layer, path)

    def export(self, layer: Labels, path: str | Path) -> list[Path]:
        """Write ``layer`` to ``path`` in the chosen format and say where (errors notified, not raised)."""
        chosen = self.choice()
        image = matching_image(self.viewer, layer) if chosen.fmt is MEASUREMENTS else None
        try:
            written = export_layer(layer, path, chosen.fmt.key, image, chosen.coordinates)
        except (OSError, ValueError, TypeError) as e:
            napari_notify("error", f"Export of {layer.name} failed: {e}")
            return []
        note = f" (mean intensity of {image.name})" if image is not None else ""
        napari_notify("info", "Saved " + ", ".join(str(p) for p in written) + note)
        return written
