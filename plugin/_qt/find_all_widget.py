"""Find all: a concept in words ("nucleus"), a score threshold, exemplar boxes, and the button.

Thin: :class:`plugin.jobs.find_all.FindAllJobs` does the work (checks, requests, tiles, paste);
the button starts it and, while it runs, cancels it. Progress shows in the box and in napari's
activity dock. Greyed out while no worker of the chosen model serves ``concept`` (SAM 3, the
stand-in): the widget calls :meth:`FindAllBox.set_connected` with what discovery says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QLineEdit, QProgressBar, QWidget

from plugin._qt.auto_widget import fraction_box
from plugin._qt.qt_helpers import TaskProgress, button
from plugin.jobs.find_all import CONCEPT, FindAllRequest
from plugin.user_settings import load, save
from protocol.ops.concept import DEFAULT_SCORE_THRESHOLD, MAX_TEXT_CHARS

if TYPE_CHECKING:
    from plugin.jobs.controller import Controller

THRESHOLD_KEY = "concept/score_threshold"
FIND_TIP = (
    "Segment every instance of the concept on the current slice (SAM 3 models) into a new labels "
    "layer named after it; large slices go tile by tile like AUTO-SEGMENT. Press again to cancel."
)
EXEMPLAR_TIP = (
    "Also send the boxes drawn in the Bounding Box layer on this slice as examples of the concept "
    "(slices up to 1024 px; with no text, the boxes alone say what to find)"
)
NOT_SERVED = "Find all needs a model whose workers serve 'concept' (SAM 3); choose one in Model."


class FindAllBox(QGroupBox):
    """The concept, its score threshold (kept between napari runs), the exemplar switch, the button."""

    def __init__(self, controller: Controller, parent: QWidget | None = None) -> None:
        super().__init__("Find all (concept)", parent)
        self.controller = controller
        form = QFormLayout(self)
        self.text = QLineEdit()
        self.text.setPlaceholderText("e.g. nucleus")
        self.text.setMaxLength(MAX_TEXT_CHARS)
        self.text.returnPressed.connect(self.toggle)
        form.addRow("Concept", self.text)
        self.threshold = fraction_box(
            load(THRESHOLD_KEY, DEFAULT_SCORE_THRESHOLD), "Keep instances scoring at least this"
        )
        self.threshold.valueChanged.connect(lambda value: save(THRESHOLD_KEY, float(value)))
        form.addRow("Score ≥", self.threshold)
        self.exemplars = QCheckBox("Exemplar boxes (Bounding Box layer)")
        self.exemplars.setToolTip(EXEMPLAR_TIP)
        form.addRow(self.exemplars)
        self.find_button = button("Find all", self.toggle, FIND_TIP)
        form.addRow(self.find_button)
        self.progress_bar = QProgressBar()
        form.addRow(self.progress_bar)
        self.task = TaskProgress(self.find_button, self.progress_bar, "Find all", "Cancel Find all")
        self._connected = False
        self.on_named: Callable[[Any], None] = lambda _layer: None
        """Called with the labels layer a run named (the dock draws its names: NAME LABEL's overlay)."""

    def request(self) -> FindAllRequest:
        """What the box asks for now."""
        return FindAllRequest(self.text.text(), float(self.threshold.value()), self.exemplars.isChecked())

    def toggle(self) -> None:
        """Start Find all on the current slice, or cancel the running one."""
        jobs = self.controller.find_all
        if self.task.running:
            jobs.cancel()
            return
        if not self.find_button.isEnabled():  # Enter in the text field while greyed out
            return
        self.task.start("Find all", jobs.cancel)
        if not jobs.run(self.request(), lambda f, text: self.task.step(f, 1.0, text), self._done):
            self._done(False)

    def _done(self, completed: bool) -> None:
        self.task.finish()
        self.set_connected(self._connected)
        applied = self.controller.applied.get(CONCEPT)
        viewer = self.controller.viewer
        if completed and applied is not None and applied.label_ids and applied.layer_name in viewer.layers:
            self.on_named(viewer.layers[applied.layer_name])

    def set_connected(self, connected: bool) -> None:
        """Enable starting only while a worker of the chosen model serves ``concept``."""
        self._connected = connected
        self.find_button.setEnabled(connected or self.task.running)
        self.find_button.setToolTip(FIND_TIP if connected else NOT_SERVED)

    def shutdown(self) -> None:
        self.controller.find_all.cancel()
        self.task.finish()
