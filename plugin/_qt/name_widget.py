"""NAME LABEL: name label ids and draw the names.

Names are kept in the labels layer's metadata (and features); a
:class:`plugin.view.name_overlay.NameOverlay` per named labels layer draws them.
Layers opened from files we wrote come back with their names and get an
overlay as soon as they are added. Saving them is the Labels tab's Export box
(:mod:`plugin._qt.export_widget`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.layers import Labels
from qtpy.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QWidget,
)

from plugin._qt.qt_helpers import Coalescer, LayerCombo, button, label_id_row
from plugin.jobs.results import napari_notify
from plugin.labels.names import METADATA_KEY, names_from_metadata, with_name
from plugin.view.name_overlay import NameOverlay
from plugin.view.picking import PICK_WAITING, pick_once

if TYPE_CHECKING:
    import napari


def set_label_name(layer: Labels, label_id: int, name: str) -> dict[int, str]:
    """Name ``label_id`` in ``layer`` (an empty name removes it); returns all names."""
    names = with_name(names_from_metadata(layer.metadata), label_id, name)
    layer.metadata = {**layer.metadata, METADATA_KEY: names}
    return names


class NameWidget(QGroupBox):
    """Choose a label (id or click), give it a name."""

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__("NAME LABEL", parent)
        self.viewer = viewer
        self.overlays: dict[Any, NameOverlay] = {}
        self._schedule = Coalescer(30, self)
        self._cancel_pick = lambda: None
        form = QFormLayout(self)
        self.layer_combo = LayerCombo(viewer, Labels)
        self._names_of: Labels | None = None  # the layer whose names the summary shows
        self.layer_combo.layer_changed.connect(self._follow_names)
        form.addRow("Labels layer", self.layer_combo)
        self.label_id, self.pick_button, row = label_id_row(1, self.pick)
        form.addRow("Label id", row)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("e.g. cell nucleus")
        self.name_edit.returnPressed.connect(self.name_label)
        form.addRow("Name", self.name_edit)
        self.name_button = button("NAME LABEL", self.name_label)
        form.addRow(self.name_button)
        self.names_label = QLabel()
        self.names_label.setWordWrap(True)
        form.addRow(self.names_label)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        for layer in list(viewer.layers):
            self._attach_if_named(layer)
        self._follow_names(self.layer_combo.layer())

    def name_label(self) -> None:
        """Give the chosen label id the typed name (empty: remove the name)."""
        layer = self.layer_combo.layer()
        if layer is None:
            napari_notify("warning", "NAME LABEL: choose a labels layer first.")
            return
        names = set_label_name(layer, self.label_id.value(), self.name_edit.text())
        self.attach(layer)
        self._show_names()
        if self.label_id.value() in names:
            napari_notify(
                "info",
                f"Label {self.label_id.value()} of {layer.name} is now “{names[self.label_id.value()]}”.",
            )

    def pick(self) -> None:
        """Wait for a click on a region of the chosen layer (the button says so meanwhile)."""
        layer = self.layer_combo.layer()
        if layer is None:
            napari_notify("warning", "Pick: choose a labels layer first.")
            return
        self._cancel_pick()
        self.pick_button.setText(PICK_WAITING)
        self._cancel_pick = pick_once(
            self.viewer, layer, self._picked, on_end=lambda: self.pick_button.setText("Pick")
        )

    def _picked(self, label_id: int) -> None:
        if label_id <= 0:
            napari_notify("info", "NAME LABEL: that is background; click inside a labelled region.")
            return
        self.label_id.setValue(label_id)
        layer = self.layer_combo.layer()
        self.name_edit.setText(names_from_metadata(layer.metadata).get(label_id, "") if layer else "")
        self.name_edit.setFocus()

    def _follow_names(self, layer: Labels | None) -> None:
        """Show ``layer``'s names and keep them current (renames in the Labels tab, undo, files)."""
        if self._names_of is not None:
            self._names_of.events.metadata.disconnect(self._show_names)
        self._names_of = layer
        if layer is not None:
            layer.events.metadata.connect(self._show_names)
        self._show_names()

    def _show_names(self, *_args: Any) -> None:
        layer = self.layer_combo.layer()
        names = names_from_metadata(layer.metadata) if layer is not None else {}
        self.names_label.setText("; ".join(f"{i}: {n}" for i, n in names.items()) or "No named labels yet.")

    # -- overlays ------------------------------------------------------------------------

    def attach(self, layer: Labels) -> None:
        """Draw ``layer``'s names on the canvas (a names layer that follows it)."""
        if layer.unique_id not in self.overlays:
            self.overlays[layer.unique_id] = NameOverlay(self.viewer, layer, self._schedule)
        else:
            self.overlays[layer.unique_id].request_update()

    def _attach_if_named(self, layer: Any) -> None:
        if isinstance(layer, Labels) and names_from_metadata(layer.metadata):
            self.attach(layer)

    def _on_inserted(self, event: Any) -> None:
        self._attach_if_named(event.value)
        self._show_names()

    def _on_removed(self, event: Any) -> None:
        overlay = self.overlays.pop(getattr(event.value, "unique_id", None), None)
        if overlay is not None:
            overlay.disconnect()

    def shutdown(self) -> None:
        self._cancel_pick()
        self._follow_names(None)
