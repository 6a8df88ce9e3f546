"""The Labels tab's Export box: save a labels layer with its names in the format of the next tool.

**Export as** chooses one of :data:`EXPORT_CHOICES`: TIFF for Fiji (+ names
JSON and CSV), OME-Zarr, GeoJSON for QuPath (pixel coordinates) or for GIS
tools (physical coordinates), the measurements CSV (mean intensity of the
image layer of the same shape, when there is one), or for a time-lapse the
Cell Tracking Challenge folder or GEFF (with the divisions kept in the
layer's metadata, :mod:`plugin.labels.lineage`). Every file carries the
provenance record (:func:`layer_provenance`: model, checkpoint, prompts). **Export…** asks where;
the dialog opens in the folder the labels or their image came from, else the
home folder, and proposes a name of the choice's own (``NAME.qupath.geojson``
and ``NAME.gis.geojson``, so the two GeoJSON exports never meet). When any
file the export would write exists already (a TIFF's names JSON and CSV
included), :attr:`ExportBox.confirm_overwrite` asks first (a question box;
tests answer it); "No" writes nothing. The writing is :func:`plugin.export.export_labels` (the same
code as ``File > Save Selected Layers`` and ``sam2-batch --format``). An export whose physical
units look wrong (:func:`plugin.calibration.export_calibration_warning`) is written with a warning.

The export reads a snapshot of the labels (:func:`plugin.labels.pyramid.label_snapshot`,
taken on the GUI thread: a pyramid's chunk table, a single-scale layer's copy) and
finds the ids present and writes the files in a thread
(:func:`plugin._qt.off_thread.read_keeping_window_alive`): the window keeps drawing, a
progress bar runs, the user's input waits until the files are written (atomically,
:mod:`protocol.runtime.atomic`), and a message says where they went or why not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils import progress
from qtpy.QtWidgets import QComboBox, QFileDialog, QGroupBox, QHBoxLayout, QMessageBox, QWidget

from plugin._qt.off_thread import read_keeping_window_alive
from plugin._qt.qt_helpers import button
from plugin.calibration import export_calibration_warning
from plugin.export import (
    CTC,
    GEFF,
    GEOJSON,
    MEASUREMENTS,
    OME_ZARR,
    TIFF,
    ExportFormat,
    export_labels,
    export_paths,
)
from plugin.jobs.results import napari_notify
from plugin.jobs.slice_prompts import SlicePrompts
from plugin.labels.lineage import lineage_from_metadata
from plugin.labels.names import names_from_metadata
from plugin.labels.pyramid import label_data, label_snapshot
from plugin.labels.stats import pixel_counts
from plugin.provenance_record import auto_run_of, automatic_provenance, interactive_provenance
from protocol.formats.geojson import PHYSICAL, PIXEL
from protocol.formats.provenance import Provenance
from protocol.wire.image_key import image_key
from protocol.wire.wire_image import to_wire

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
        name_suffix: what the dialog proposes after the layer's name (the format's suffix by default).
    """

    key: str
    title: str
    fmt: ExportFormat
    coordinates: str = PIXEL
    name_suffix: str = ""

    def default_name(self, layer_name: str) -> str:
        """The file name the export dialog proposes for a layer."""
        return f"{layer_name}{self.name_suffix or self.fmt.suffix}"


EXPORT_CHOICES = (
    ExportChoice(TIFF.key, TIFF.title, TIFF),
    ExportChoice(OME_ZARR.key, OME_ZARR.title, OME_ZARR),
    ExportChoice(GEOJSON.key, "GeoJSON for QuPath (pixel coordinates)", GEOJSON, PIXEL, ".qupath.geojson"),
    ExportChoice(
        "geojson-physical", "GeoJSON for GIS (physical coordinates)", GEOJSON, PHYSICAL, ".gis.geojson"
    ),
    ExportChoice(MEASUREMENTS.key, MEASUREMENTS.title, MEASUREMENTS),
    ExportChoice(CTC.key, CTC.title, CTC),
    ExportChoice(GEFF.key, GEFF.title, GEFF),
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


def plane_image_key(image: Image | None, model: str | None) -> str | None:
    """The content key the workers give a 2D image (:func:`protocol.wire.image_key.image_key` of
    what a click sends: its pixels with the layer's contrast limits, for ``model``); None for a
    stack (one key per slice), a multiscale image, or an unknown model."""
    if image is None or not model or image.multiscale or image.ndim - (1 if image.rgb else 0) != 2:
        return None
    wire = to_wire(np.asarray(image.data), tuple(image.contrast_limits))
    return image_key(wire.pixels, wire.contrast_limits, model)


def layer_provenance(
    layer: Labels,
    slice_prompts: SlicePrompts,
    model: str | None,
    info: Any = None,
    image: Image | None = None,
    present: Sequence[int] | None = None,
) -> Provenance:
    """The record of ``layer``: the backend's model facts, each present label's newest prompts, and
    the image's file and contrast limits (what the prompts were sent with; ``--replay`` uses them).
    A layer made by AUTO-SEGMENT (STACK) gets its parameters and tile grid instead of prompts.

    ``present``: the label ids in the layer, ascending (counted here, O(layer), when None)."""
    if present is None:
        present = present_ids(label_data(layer))
    present = [int(i) for i in present]
    source = getattr(getattr(image, "source", None), "path", None)
    parameters = {} if image is None else {"contrast_limits": [float(v) for v in image.contrast_limits]}
    run = auto_run_of(layer.metadata)
    key = plane_image_key(image, model)
    if run is not None:
        path = None if source is None else str(source)
        return automatic_provenance(
            present, run, model=model, info=info, image_key=key, source_path=path, parameters=parameters
        )
    prompts = {i: [e.prompt for e in slice_prompts.entries(layer.unique_id, i)] for i in present}
    return interactive_provenance(
        present,
        prompts,
        model=model,
        info=info,
        image_key=key,
        source_path=None if source is None else str(source),
        parameters=parameters,
    )


def present_ids(data: Any) -> list[int]:
    """The non-zero label ids of nD labels (any array-like; read slab by slab), ascending."""
    return sorted(pixel_counts(data))


def too_large_message(layer_name: str, title: str) -> str:
    """What the user reads when an export ran out of memory (its files are written atomically: none)."""
    return (
        f"Export of {layer_name} failed: not enough memory to write it as {title}. Nothing was "
        "written. TIFF and OME-Zarr write a large layer chunk by chunk."
    )


def ask_overwrite(parent: QWidget, existing: Sequence[Path]) -> bool:
    """Ask whether to replace the ``existing`` files (a modal question box; No is the default)."""
    listed = "\n".join(str(p) for p in existing[:6]) + ("\n…" if len(existing) > 6 else "")
    answer = QMessageBox.question(
        parent,
        "Replace existing files?",
        f"The export would replace:\n{listed}\n\nReplace them?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def export_layer(
    layer: Labels,
    path: str | Path,
    fmt: str = TIFF.key,
    image: Image | None = None,
    coordinates: str = PIXEL,
    provenance: Provenance | None = None,
    data: Any = None,
    counts: Mapping[int, int] | None = None,
) -> list[Path]:
    """Save ``layer`` with its names as ``fmt`` (atomically); return the paths written.

    Args:
        layer: the labels layer (names from its metadata; scale, translate, units, axis labels).
        path: where (the format's suffix is added when missing).
        fmt: a key of :data:`plugin.export.EXPORT_FORMATS`.
        image: intensities for the measurements CSV (same shape as the labels, or plus colour).
        coordinates: GeoJSON ``pixel`` or ``physical`` coordinates.
        provenance: how the labels were made (written in the format's own place).
        data: the labels to write (a :func:`label_snapshot` of the layer; default: its level 0 now).
        counts: the pixel counts of ``data``'s ids when counted already (the TIFF's CSV uses them).
    """
    return export_labels(
        fmt,
        path,
        label_data(layer) if data is None else data,
        names_from_metadata(layer.metadata),
        scale=layer.scale,
        translate=layer.translate,
        units=getattr(layer, "units", None),
        axis_labels=getattr(layer, "axis_labels", None),
        image=None if image is None else image.data,
        coordinates=coordinates,
        title=layer.name,
        parents=lineage_from_metadata(layer.metadata),
        provenance=provenance,
        counts=counts,
    )


class ExportBox(QGroupBox):
    """Choose a format, press Export…: the labels layer ``layer_of()`` gives is saved there."""

    def __init__(
        self,
        viewer: napari.Viewer,
        layer_of: Callable[[], Labels | None],
        provenance_of: Callable[[Labels, Sequence[int]], Provenance | None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Export", parent)
        self.viewer = viewer
        self.layer_of = layer_of
        self.provenance_of = provenance_of
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
        self.confirm_overwrite: Callable[[Sequence[Path]], bool] = lambda paths: ask_overwrite(self, paths)
        """Asked with the files an export would replace; False writes nothing (tests replace it)."""

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
        start = export_folder(self.viewer, layer) / chosen.default_name(layer.name)
        path, _ = QFileDialog.getSaveFileName(
            self,
            f"Export labels: {chosen.title}",
            str(start),
            chosen.fmt.file_filter,
            options=QFileDialog.Option.DontConfirmOverwrite,  # asked below, for every file written
        )
        if not path:
            return
        existing = [p for p in export_paths(chosen.fmt.key, path) if p.exists()]
        if existing and not self.confirm_overwrite(existing):
            napari_notify("info", f"Export of {layer.name} cancelled: nothing was overwritten.")
            return
        self.export(layer, path)

    def export(self, layer: Labels, path: str | Path) -> list[Path]:
        """Write ``layer`` to ``path`` in the chosen format and say where (errors notified, not raised).

        The reading and writing run in a thread; this returns once the files are written.
        """
        chosen = self.choice()
        shown = matching_image(self.viewer, layer)
        image = shown if chosen.fmt is MEASUREMENTS else None
        unsure = export_calibration_warning(layer, shown)
        if unsure is not None:
            napari_notify("warning", f"Export of {layer.name}: {unsure}")
        snapshot = label_snapshot(layer)  # later edits do not reach the file
        try:
            with progress(total=0, desc=f"Exporting {layer.name}") as bar:
                counts = read_keeping_window_alive(lambda: pixel_counts(snapshot))  # once: minutes on a slide
                provenance = None if self.provenance_of is None else self.provenance_of(layer, sorted(counts))
                bar.set_description(f"Writing {layer.name}")
                written = read_keeping_window_alive(
                    lambda: export_layer(
                        layer, path, chosen.fmt.key, image, chosen.coordinates, provenance, snapshot, counts
                    )
                )
        except (OSError, ValueError, TypeError) as e:
            napari_notify("error", f"Export of {layer.name} failed: {e}")
            return []
        except MemoryError:
            napari_notify("error", too_large_message(layer.name, chosen.title))
            return []
        note = f" (mean intensity of {image.name})" if image is not None else ""
        napari_notify("info", "Saved " + ", ".join(str(p) for p in written) + note)
        return written
