"""The Labels tab's Tracks box: track corrections and the track table of a time-lapse labels layer.

Buttons act on the labels selected in the label list and the frame shown (axis 0):
**Break here** (the selected label gets a new id from this frame on), **Link** (two selected
labels become one track), **Swap from here** (two selected labels trade ids from this frame on),
**Mark division** (the selected label on the previous frame is the parent, the other selected
labels its daughters; the parent ends on the previous frame), **Divide here** (select the parent,
press it, click a point in each daughter on the frame shown in the ``… daughters`` Points layer it
adds, press it again: new ids propagated forward, :mod:`plugin.jobs.divide`). Each is one undo step
(:mod:`plugin.labels.track_edits`). The table (id, name, first/last frame, parent,
displacement, mean speed per frame interval in the layer's units) is computed off the GUI thread
with the Tracks layer, which then follows edits (:mod:`plugin.tracks_follow`); selecting a row
shows its first frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QTableView, QVBoxLayout, QWidget

from plugin._qt.qt_helpers import button
from plugin.labels.track_edits import break_track, divide, link_tracks, swap_tracks
from plugin.tracks import (
    NapariTracks,
    TrackRow,
    is_time_lapse,
    layer_geometry,
    names_of,
    track_rows,
)
from plugin.tracks_follow import TracksFollower

if TYPE_CHECKING:
    from plugin._qt.label_table_widget import LabelTable
    from plugin.jobs.controller import Controller

COLUMNS = ("id", "name", "first", "last", "parent", "displacement", "mean speed")
DIVIDE_TEXT = "Divide here"
DAUGHTERS_SUFFIX = " daughters"
"""The Points layer of labels layer ``cells`` where Divide here takes its clicks: ``cells daughters``."""


class TrackTableModel(QAbstractTableModel):
    """Rows of :class:`plugin.tracks.TrackRow` (the view asks only for the visible ones)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[TrackRow] = []

    def set_rows(self, rows: list[TrackRow]) -> None:
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def rowCount(self, parent: Any = None) -> int:
        return len(self.rows)

    def columnCount(self, parent: Any = None) -> int:
        return len(COLUMNS)

    def headerData(self, section: int, orientation: Any, role: int = 0) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role: int = 0) -> Any:
        if role != Qt.ItemDataRole.DisplayRole or not index.isValid():
            return None
        row = self.rows[index.row()]
        parent = row.parent or ""
        values = (row.track_id, row.name, row.first, row.last, parent, row.displacement, row.mean_speed)
        value = values[index.column()]
        return f"{value:.3g}" if isinstance(value, float) else str(value)


class TracksBox(QGroupBox):
    """Track corrections and the track table for the layer of the label list."""

    def __init__(self, controller: Controller, table: LabelTable, parent: QWidget | None = None) -> None:
        super().__init__("Tracks (time-lapse)", parent)
        self.controller = controller
        self.table = table
        self._division: tuple[Any, int, Any] | None = None  # (labels layer, parent, daughters' Points)
        self.divisions_started = 0
        self.followers: dict[Any, TracksFollower] = {}
        """labels layer id -> what keeps its Tracks layer in step with its edits."""
        column = QVBoxLayout(self)
        row = QHBoxLayout()
        buttons = {}
        for text, slot in (
            ("Break here", self.break_here),
            ("Link", self.link),
            ("Swap from here", self.swap_here),
            ("Mark division", self.mark_division),
            (DIVIDE_TEXT, self.divide_here),
            ("Refresh", self.refresh),
        ):
            buttons[text] = button(text, slot)
            row.addWidget(buttons[text])
        self.divide_button = buttons[DIVIDE_TEXT]
        column.addLayout(row)
        self.model = TrackTableModel()
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.view.clicked.connect(self._on_row)
        column.addWidget(self.view)

    def _context(self) -> tuple[Any, list[int], int] | None:
        layer = self.table.layer
        if layer is None or not is_time_lapse(layer):
            self.controller.notify("warning", "Tracks: choose a labels layer whose first axis is time.")
            return None
        return layer, self.table.selected_ids(), int(self.controller.viewer.dims.current_step[0])

    def _edit(self, what: str, action: Any) -> None:
        try:
            action()
        except ValueError as e:
            self.controller.notify("warning", f"{what}: {e}")
            return
        self.refresh()

    def break_here(self) -> None:
        found = self._context()
        if found is None or len(found[1]) != 1:
            self.controller.notify("info", "Break here: select one label.")
            return
        layer, (label_id,), frame = found
        new_id = int(np.asarray(layer.data).max()) + 1
        history = self.controller.histories(layer)
        self._edit("Break here", lambda: break_track(history, label_id, frame, new_id))

    def link(self) -> None:
        found = self._two_labels("Link")
        if found is not None:
            layer, (keep, other), _ = found
            self._edit("Link", lambda: link_tracks(self.controller.histories(layer), keep, other))

    def swap_here(self) -> None:
        found = self._two_labels("Swap from here")
        if found is not None:
            layer, (a, b), frame = found
            self._edit("Swap", lambda: swap_tracks(self.controller.histories(layer), a, b, frame))

    def _two_labels(self, what: str) -> tuple[Any, list[int], int] | None:
        """:meth:`_context` when two labels are selected; else None, after telling the user."""
        found = self._context()
        if found is None or len(found[1]) != 2:
            self.controller.notify("info", f"{what}: select two labels.")
            return None
        return found

    def mark_division(self) -> None:
        found = self._context()
        if found is None or len(found[1]) < 2:
            self.controller.notify("info", "Mark division: select the parent and its daughters.")
            return
        layer, ids, frame = found
        before = np.asarray(layer.data[frame - 1]) if frame > 0 else np.zeros(0)
        parents = [i for i in ids if (before == i).any()]
        if len(parents) != 1:
            message = "Mark division: one selected label must be on the previous frame (the parent)."
            self.controller.notify("warning", message)
            return
        parent, daughters = parents[0], [i for i in ids if i != parents[0]]
        history = self.controller.histories(layer)
        self._edit("Mark division", lambda: divide(history, parent, daughters, frame))

    def divide_here(self) -> None:
        """First press: take the selected label as the parent and add the daughters' Points layer;
        second press: divide it on the frame shown, one daughter per point clicked there."""
        if self._division is not None:
            self._start_division(*self._division)
            return
        found = self._context()
        if found is None or len(found[1]) != 1:
            self.controller.notify("info", f"{DIVIDE_TEXT}: select the parent label first.")
            return
        layer, (parent,), frame = found
        name = layer.name + DAUGHTERS_SUFFIX
        viewer = self.controller.viewer
        if name in viewer.layers:
            viewer.layers.remove(name)
        points = viewer.add_points(
            np.empty((0, layer.ndim)), name=name, scale=layer.scale, translate=layer.translate, size=4
        )
        points.mode = "add"
        self._division = (layer, parent, points)
        self.divide_button.setText(f"Divide {parent}: propagate daughters")
        message = (
            f"{DIVIDE_TEXT}: click a point in each daughter of {parent} on frame {frame}, then press again."
        )
        self.controller.notify("info", message)

    def _start_division(self, layer: Any, parent: int, points: Any) -> None:
        frame = int(self.controller.viewer.dims.current_step[0])
        clicked = np.asarray(points.data)
        on_frame = [(float(p[-2]), float(p[-1])) for p in clicked if round(float(p[0])) == frame]
        if len(on_frame) < 2:
            self.controller.notify("info", f"{DIVIDE_TEXT}: click two or more daughters on frame {frame}.")
            return
        self._division = None
        self.divide_button.setText(DIVIDE_TEXT)
        if points in self.controller.viewer.layers:
            self.controller.viewer.layers.remove(points)
        self.controller.viewer.layers.selection.active = layer
        started = self.controller.stack.divide_here(
            layer, parent, on_frame, lambda *_: None, lambda _completed: self.refresh()
        )
        if started:
            self.divisions_started += 1

    def refresh(self) -> None:
        """Show the Tracks layer and the table, and keep them following the layer's edits: only the
        frames an edit or undo touched are read again, off the GUI thread (:mod:`plugin.tracks_follow`)."""
        layer = self.table.layer
        if layer is None or not is_time_lapse(layer) or layer.multiscale:
            self.model.set_rows([])
            return
        geometry = layer_geometry(layer)
        scale = geometry.scale[1:] if geometry is not None else (1.0,) * (layer.ndim - 1)

        def fill(tracks: NapariTracks) -> None:
            if self.table.layer is layer:
                self.model.set_rows(track_rows(tracks, names_of(layer), scale))

        follower = self.followers.get(layer.unique_id)
        if follower is None or follower.layer is not layer:
            c = self.controller
            follower = TracksFollower(c.viewer, layer, c.histories(layer), c.dispatch)
            self.followers[layer.unique_id] = follower
        else:
            follower.mark(range(follower.n_frames))
        follower.listeners[:] = [fill]

    def _on_row(self, index: QModelIndex) -> None:
        row = self.model.rows[index.row()]
        step = list(self.controller.viewer.dims.current_step)
        step[0] = row.first
        self.controller.viewer.dims.current_step = tuple(step)
        self.table.select(row.label_id)
