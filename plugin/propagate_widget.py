"""The "Propagate" box: carry the selected label of the current slice through the stack (z or time).

Thin: the work is :meth:`plugin.stack_jobs.StackJobs.propagate`; the label
is the one selected in the :class:`plugin.label_table_widget.LabelTable`;
slices are written with the labeling mode chosen on the Segment tab.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QProgressBar, QWidget

from plugin.qt_helpers import TaskProgress, button
from plugin.stack_jobs import PROPAGATE
from protocol.ops import DIRECTIONS

if TYPE_CHECKING:
    from plugin.controller import Controller
    from plugin.label_table_widget import LabelTable

TIP = (
    "Propagate the selected label from the current slice through the stack (the first "
    "non-displayed axis: z or time) with SAM2's video predictor. Each slice is written with the "
    "same id, under the labeling mode of the Segment tab (add/union paint it over; intersection "
    "and overwrite refine the label on each slice). One undo step; press again to cancel."
)


class PropagateBox(QGroupBox):
    """Direction, start/cancel, progress ("slice i of n")."""

    def __init__(self, controller: Controller, table: LabelTable, parent: QWidget | None = None) -> None:
        super().__init__("Propagate through the stack", parent)
        self.controller = controller
        self.table = table
        form = QFormLayout(self)
        self.direction = QComboBox()
        self.direction.addItems(list(DIRECTIONS))
        form.addRow("Direction", self.direction)
        self.button = button("Propagate", self.toggle, TIP)
        form.addRow(self.button)
        self.bar = QProgressBar()
        form.addRow(self.bar)
        self.task = TaskProgress(self.button, self.bar, "Propagate", "Cancel propagation")
        self._connected = False

    def toggle(self) -> None:
        """Start propagating the selected label, or cancel the running propagation."""
        if self.task.running:
            self.controller.stack.cancel(PROPAGATE)
            return
        ids, layer = self.table.selected_ids(), self.table.layer
        if layer is None or len(ids) != 1:
            self.controller.notify("warning", "Propagate: select one label in the list first.")
            return
        self.task.start(f"Propagate label {ids[0]}", lambda: self.controller.stack.cancel(PROPAGATE))
        started = self.controller.stack.propagate(
            layer, ids[0], self.direction.currentText(), self.task.step, self._done
        )
        if not started:
            self._done(False)

    def _done(self, _completed: bool) -> None:
        self.task.finish()
        self.set_connected(self._connected)

    def set_connected(self, connected: bool) -> None:
        """Enable starting only while a worker answers (a running propagation can always be cancelled)."""
        self._connected = connected
        self.button.setEnabled(connected or self.task.running)
