"""The label-control panel: the labels of a layer (id, colour, name, pixels), kept in sync.

The list follows the labels layer made active in napari's layer list (or
the one chosen in its own box). Select a row to make it the layer's
selected label and show the slice where it is; edit a name in place; delete or merge the selected labels;
undo and redo (also ``Ctrl+Z`` / ``Ctrl+Shift+Z`` on the layer); "Edit here"
(:mod:`plugin.view.edit_here`) to paint a window of the layer by hand. Counting
and following the layer is :class:`plugin.labels.watch.LabelWatcher`; the
edits are :mod:`plugin.labels.edits`. Propagation through the stack is the
:class:`plugin._qt.propagate_widget.PropagateBox` below the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from napari.layers import Labels
from qtpy.QtCore import QItemSelection, QItemSelectionModel
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from plugin._qt.label_model import COLOUR, COLUMNS, ID, NAME, PIXELS, LabelModel
from plugin._qt.off_thread import read_keeping_window_alive
from plugin._qt.qt_helpers import Coalescer, LayerCombo, button, next_turn, spin_box
from plugin.labels.edits import delete_labels, merge_labels
from plugin.labels.history import set_names
from plugin.labels.names import names_from_metadata, with_name
from plugin.labels.pyramid import label_data
from plugin.labels.stats import locate
from plugin.labels.watch import LabelWatcher
from plugin.view.coords import OutsideImage
from plugin.view.edit_here import (
    EDIT_MAX_SIDE,
    EditWindow,
    close_edit_window,
    is_edit_window,
    open_edit_window,
)
from plugin.view.layers import displayed_axes, plane_of, show_slice

if TYPE_CHECKING:
    import napari

    from plugin.jobs.controller import Controller


EDIT_HERE = "Edit here"
WRITE_BACK = "Write back"


class LabelTable(QWidget):
    """The labels of the chosen layer, with rename, delete, merge, undo and redo."""

    def __init__(self, viewer: napari.Viewer, controller: Controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.controller = controller
        self._schedule = Coalescer(60, self)
        self.watcher = LabelWatcher(
            controller.histories, lambda: self._schedule(self.refresh), read_keeping_window_alive
        )
        self._shown_layer: Labels | None = None  # the layer whose colours the model keeps
        self.edit_window: EditWindow | None = None
        """The "Edit here" window open now (None: none)."""
        self.on_named: Callable[[Labels], None] = lambda _layer: None
        """Called after a name is typed into the list (the main widget draws the names)."""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.layer_combo = LayerCombo(viewer, Labels)
        self.layer_combo.layer_changed.connect(self.watcher.watch)
        layout.addWidget(self.layer_combo)
        self.model = LabelModel(self._colour_of, self._rename, self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        rows_header, header = self.table.verticalHeader(), self.table.horizontalHeader()
        assert rows_header is not None and header is not None
        rows_header.setVisible(False)
        header.setSectionResizeMode(NAME, QHeaderView.ResizeMode.Stretch)
        for column in (COLOUR, ID, PIXELS):  # fixed widths: sizing to contents would read every row
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(COLOUR, 28)
        header.resizeSection(ID, 80)
        header.resizeSection(PIXELS, 100)
        rows_header.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows_header.setDefaultSectionSize(22)
        selection = self.table.selectionModel()
        assert selection is not None
        selection.selectionChanged.connect(lambda *_: self._on_selection())
        layout.addWidget(self.table, 1)
        self.summary = QLabel()
        layout.addWidget(self.summary)
        self.highlight = QCheckBox("Show the selected label only")
        self.highlight.toggled.connect(self._on_highlight)
        self.recount_button = button(
            "Recount", self.watcher.recount, "Count again (after the data was changed outside napari's edits)"
        )
        row = QHBoxLayout()
        row.addWidget(self.highlight, 1)
        row.addWidget(self.recount_button)
        layout.addLayout(row)
        layout.addLayout(self._edit_row())
        viewer.layers.selection.events.active.connect(self._on_active)
        self._on_active()
        self.watcher.watch(self.layer_combo.layer())

    def _on_active(self, _event: object = None) -> None:
        active = self.viewer.layers.selection.active
        if isinstance(active, Labels) and active is not self.layer and not is_edit_window(active):
            # an "Edit here" window is not followed: switching would count the edited layer again
            self.layer_combo.set_layer(active)

    def _edit_row(self) -> QHBoxLayout:
        self.undo_button = button("Undo", self.undo, "Undo the last edit of this layer (Ctrl+Z on it)")
        self.redo_button = button("Redo", self.redo, "Redo (Ctrl+Shift+Z on the layer)")
        self.delete_button = button("Delete", self.delete_selected, "Delete the selected labels")
        self.merge_button = button("Merge into", self.merge_selected, "Relabel the selected labels as this")
        self.merge_target = spin_box(1, 2**31 - 1)
        self.edit_here_button = button(
            EDIT_HERE,
            self.toggle_edit_here,
            "Paint with napari's brush, fill and eraser on the part of this layer under the view (up to "
            f"{EDIT_MAX_SIDE}² pixels, also on a pyramid layer); press again to write it back as one step",
        )
        row = QHBoxLayout()
        for widget in (self.undo_button, self.redo_button, self.delete_button, self.merge_button):
            row.addWidget(widget)
        row.addWidget(self.merge_target)
        row.addWidget(self.edit_here_button)
        return row

    # -- state ----------------------------------------------------------------------------------

    @property
    def layer(self) -> Labels | None:
        return self.watcher.layer

    def selected_ids(self) -> list[int]:
        """Ids of the selected rows, ascending."""
        selection = self.table.selectionModel()
        rows = {index.row() for index in selection.selectedRows()} if selection is not None else set()
        return sorted(int(self.model.ids[r]) for r in rows if r < len(self.model.ids))

    def select(self, label_id: int) -> None:
        """Select the row of ``label_id`` (as a click would)."""
        row = self.model.row_of(label_id)
        if row is not None:
            self.table.selectRow(row)

    def refresh(self) -> None:
        """Redraw the list from the watcher (keeps the selection).

        One model reset over numpy columns: the view then asks only for the
        rows on screen (and their colours), whatever the number of labels.
        """
        selected = self.selected_ids()
        layer = self.layer
        ids, pixels = self.watcher.columns()
        names = names_from_metadata(layer.metadata) if layer is not None else {}
        selection = self.table.selectionModel()
        assert selection is not None
        selection.blockSignals(True)
        self.model.set_rows(ids, pixels, names, new_layer=layer is not self._shown_layer)
        self._shown_layer = layer
        chosen = QItemSelection()
        for label_id in selected:
            row = self.model.row_of(label_id)
            if row is not None:
                chosen.select(self.model.index(row, 0), self.model.index(row, len(COLUMNS) - 1))
        selection.select(chosen, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        selection.blockSignals(False)
        named = sum(1 for i in names if self.model.row_of(i) is not None)
        self.summary.setText(f"{len(ids)} labels, {named} named" if layer is not None else "")
        self._update_buttons()

    def _colour_of(self, label_id: int) -> tuple[float, ...]:
        layer = self.layer
        return tuple(layer.get_color(label_id)) if layer is not None else (0.0, 0.0, 0.0)

    def _update_buttons(self) -> None:
        history = self.controller.histories(self.layer) if self.layer is not None else None
        self.undo_button.setEnabled(history is not None and history.undo_depth > 0)
        self.redo_button.setEnabled(history is not None and history.redo_depth > 0)
        chosen = len(self.selected_ids())
        self.delete_button.setEnabled(chosen > 0)
        self.merge_button.setEnabled(chosen > 0)

    # -- callbacks ---------------------------------------------------------------------------------

    def _on_selection(self) -> None:
        ids = self.selected_ids()
        self._update_buttons()
        if ids:
            self.merge_target.setValue(ids[0])
        if len(ids) == 1 and self.layer is not None:
            self.layer.selected_label = ids[0]
            self.jump_to(ids[0])

    def jump_to(self, label_id: int) -> bool:
        """Show the slice of the current layer where ``label_id`` is (this one if it is here)."""
        layer = self.layer
        if layer is None:
            return False
        try:
            plane = plane_of(self.viewer, layer, tuple(layer.data.shape))
            where = locate(label_data(layer), label_id, displayed_axes(self.viewer, layer), plane.index)
        except (ValueError, OutsideImage):
            return False
        if where is None:
            return False
        if where != plane.index:
            show_slice(self.viewer, layer, where)
        return True

    def _rename(self, label_id: int, name: str) -> None:
        """A name typed into the list's name cell (empty removes it)."""
        layer = self.layer
        if layer is None:
            return
        set_names(layer, with_name(names_from_metadata(layer.metadata), label_id, name))
        self.on_named(layer)

    def _on_highlight(self, on: bool) -> None:
        if self.layer is not None:
            self.layer.show_selected_label = bool(on)

    # -- edits --------------------------------------------------------------------------------------

    def undo(self) -> None:
        if self.layer is not None:
            self.controller.histories(self.layer).undo()
        self._update_buttons()

    def redo(self) -> None:
        if self.layer is not None:
            self.controller.histories(self.layer).redo()
        self._update_buttons()

    def toggle_edit_here(self) -> None:
        """Open an "Edit here" window on the current layer, or write back the one open."""
        window, self.edit_window = self.edit_window, None
        self.edit_here_button.setText(EDIT_HERE)
        if window is not None:
            kept = window.layer in self.viewer.layers
            off_gui = self.controller.histories.off_gui  # the store written in a thread (pyramid)
            pixels = close_edit_window(self.viewer, window, write_back=kept, off_gui=off_gui)
            where = window.source.name
            text = f"Edit here: {pixels} pixels written to {where}." if kept else "Edit here: window removed."
            self.controller.notify("info", text)
            if window.source is not self.layer and window.source in self.viewer.layers:
                self.layer_combo.set_layer(window.source)
            return
        if self.layer is None:
            self.controller.notify("warning", "Edit here: choose a labels layer first.")
            return
        try:
            self.edit_window = open_edit_window(self.viewer, self.layer, later=next_turn)
        except (ValueError, OutsideImage) as e:
            self.controller.notify("warning", f"Edit here: {e}")
            return
        self.edit_here_button.setText(WRITE_BACK)

    def _box_of(self, label_ids: list[int]) -> tuple[slice, ...] | None:
        """A box holding every pixel of ``label_ids`` on a 2D layer, from the label boxes; None: not known."""
        layer = self.layer
        if layer is None or layer.ndim != 2:
            return None
        try:
            plane = plane_of(self.viewer, layer, tuple(layer.data.shape))
        except (ValueError, OutsideImage):
            return None
        boxes = [self.controller.results.label_box(layer, plane, i) for i in label_ids]
        if any(box is None for box in boxes):
            return None
        found = [box for box in boxes if box is not None and box[2] > box[0] and box[3] > box[1]]
        if not found:
            return (slice(0, 0), slice(0, 0))
        r0, c0 = min(b[0] for b in found), min(b[1] for b in found)
        return slice(r0, max(b[2] for b in found)), slice(c0, max(b[3] for b in found))

    def delete_selected(self) -> None:
        ids = self.selected_ids()
        if self.layer is None or not ids:
            return
        pixels = delete_labels(self.controller.histories(self.layer), ids, self._box_of(ids))
        text = f"Deleted label(s) {_ids(ids)} of {self.layer.name} ({pixels} pixels)."
        self.controller.notify("info", text)

    def merge_selected(self) -> None:
        ids, target = self.selected_ids(), self.merge_target.value()
        if self.layer is None or not ids:
            return
        sources = [i for i in ids if i != target]
        if not sources:
            self.controller.notify("info", f"Merge: choose labels other than {target} to merge into it.")
            return
        try:
            pixels = merge_labels(
                self.controller.histories(self.layer), sources, target, self._box_of(sources)
            )
        except ValueError as e:
            self.controller.notify("warning", f"Merge: {e}")
            return
        self.controller.tracker.observe(self.layer.unique_id, target)
        self.controller.slice_prompts.merge(self.layer.unique_id, sources, target)  # Propagate sends them
        self.controller.notify(
            "info", f"Merged label(s) {_ids(sources)} into {target} in {self.layer.name} ({pixels} pixels)."
        )
        self.select(target)

    def shutdown(self) -> None:
        self.viewer.layers.selection.events.active.disconnect(self._on_active)
        self.watcher.close()


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:8])) + ("…" if len(ids) > 8 else "")
