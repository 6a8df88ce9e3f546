"""The "Propagate" box: carry labels of the current slice through the stack (z or time).

Thin: the work is :meth:`plugin.jobs.propagate.Propagation.propagate_labels`
(as ``StackJobs.propagate_labels``); the
labels are those selected in the :class:`plugin._qt.label_table_widget.LabelTable`
(one or many) or all labels on the current slice (the "Labels" choice);
slices are written with the labeling mode chosen on the Segment tab.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QWidget

from plugin._qt.qt_helpers import TaskProgress
from plugin.jobs.stack_runs import PROPAGATE
from protocol.wire.propagate import DIRECTIONS

if TYPE_CHECKING:
    from plugin._qt.label_table_widget import LabelTable
    from plugin.jobs.controller import Controller

SELECTED, ALL_ON_SLICE = "selected label(s)", "all labels on this slice"
TIP = (
    "Propagate the selected label(s), or all labels on the current slice, through the stack (the "
    "first non-displayed axis: z or time) with SAM2's video predictor, all in one pass. Each object "
    "keeps its own id on every slice, under the labeling mode of the Segment tab (add/union paint it "
    "over; intersection and overwrite refine the label on each slice); an object that vanishes "
    "stops. One undo step; press again to cancel (slices written so far stay)."
)


class PropagateBox(QGroupBox):
    """Direction, start/cancel, progress ("slice i of n")."""

    def __init__(self, controller: Controller, table: LabelTable, parent: QWidget | None = None) -> None:
        super().__init__("Propagate through the stack", parent)
        self.controller = controller
        self.table = table
        form = QFormLayout(self)
        self.which = QComboBox()
        self.which.addItems([SELECTED, ALL_ON_SLICE])
        form.addRow("Labels", self.which)
        self.direction = QComboBox()
        self.direction.addItems(list(DIRECTIONS))
        form.addRow("Direction", self.direction)
        self.task = TaskProgress.in_form(form, "Propagate", self.toggle, TIP, "Cancel propagation")
        self.button, self.bar = self.task.button, self.task.bar
        self._connected = False
        self.after_run: Callable[[], None] | None = None
        """Called after a completed run (the Tracks box shows a time-lapse's tracks and follows edits)."""

    def toggle(self) -> None:
        """Start propagating the chosen labels, or cancel the running propagation."""
        if self.task.running:
            self.controller.stack.cancel(PROPAGATE)
            return
        layer = self.table.layer
        if layer is None:
            self.controller.notify("warning", "Propagate: choose a labels layer first.")
            return
        if self.which.currentText() == ALL_ON_SLICE:
            ids = self._ids_on_slice()
            if not ids:
                self.controller.notify("warning", f"Propagate: no label on this slice of {layer.name}.")
                return
        else:
            ids = list(self.table.selected_ids())
            if not ids:
                self.controller.notify("warning", "Propagate: select one or more labels in the list first.")
                return
        what = f"label {ids[0]}" if len(ids) == 1 else f"{len(ids)} labels"
        self.task.start(f"Propagate {what}", lambda: self.controller.stack.cancel(PROPAGATE))
        started = self.controller.stack.propagate_labels(
            layer, ids, self.direction.currentText(), self.task.step, self._done
        )
        if not started:
            self._done(False)

    def _ids_on_slice(self) -> list[int]:
        """The non-zero ids on the slice of the labels layer shown now."""
        from plugin.view.coords import OutsideImage
        from plugin.view.layers import plane_of, slice_view

        layer = self.table.layer
        if layer is None:
            return []
        try:
            plane = plane_of(self.controller.viewer, layer, tuple(layer.data.shape))
        except (ValueError, OutsideImage):
            return []
        return [int(i) for i in np.unique(slice_view(layer, plane)) if i]

    def _done(self, completed: bool) -> None:
        self.task.finish()
        self.set_connected(self._connected)
        if completed and self.after_run is not None:
            self.after_run()

    def set_connected(self, connected: bool) -> None:
        """Enable starting only while a worker answers (a running propagation can always be cancelled)."""
        self._connected = connected
        self.button.setEnabled(connected or self.task.running)
