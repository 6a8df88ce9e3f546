"""The Segment tab's "Prompts" and "Labeling mode" boxes.

Thin: the prompt layers are :class:`plugin.jobs.prompt_layers.PromptLayers` (through the
controller), the mode and refine target go to :meth:`plugin.jobs.controller.Controller.set_mode`,
"Add without overwriting" to :attr:`plugin.jobs.results.Results.only_background` (kept between
napari runs), Pick is :func:`plugin.view.picking.pick_once`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.layers import Labels
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from plugin import user_settings
from plugin._qt.qt_helpers import LayerCombo, button, label_id_row, next_turn
from plugin.jobs.submit import BOX, POINTS
from plugin.labels.ops import LabelMode
from plugin.view.picking import PICK_WAITING, pick_once

if TYPE_CHECKING:
    import napari.viewer

    from plugin.jobs.controller import Controller

ONLY_BACKGROUND_KEY = "labels/only_background"
ONLY_BACKGROUND_TIP = (
    "New objects (Add mode and AUTO-SEGMENT) fill only background: labels already there are never "
    "painted over. Untick to let new objects paint over them."
)
NO_IMAGE = (
    "open an image first (File > Open, or File > Open Sample > SAM2 Segmentation > Cell), "
    "then choose it in the Image box."
)


class PromptBox(QGroupBox):
    """Point prompts, Box prompts, New object, and the negative-points toggle."""

    def __init__(
        self, viewer: napari.viewer.Viewer, controller: Controller, parent: QWidget | None = None
    ) -> None:
        super().__init__("Prompts", parent)
        self.viewer = viewer
        self.controller = controller
        grid = QVBoxLayout(self)
        row = QHBoxLayout()
        self.points_button = button("Point prompts", self.start_points)
        self.box_button = button("Box prompts", self.start_box)
        self.new_button = button("New object (N)", controller.new_object)
        for widget in (self.points_button, self.box_button, self.new_button):
            row.addWidget(widget)
        grid.addLayout(row)
        self.negative = QCheckBox("Negative points (or hold Shift / Alt / Ctrl while clicking)")
        self.negative.toggled.connect(controller.set_negative)
        grid.addWidget(self.negative)

    def set_connected(self, connected: bool) -> None:
        for widget in (self.points_button, self.box_button, self.new_button):
            widget.setEnabled(connected)

    def start_points(self) -> None:
        """Select the ``Prompt Points`` layer in add mode (creating it, showing it if hidden);
        the result layer follows on the next event-loop turn."""
        layer = self.controller.points_layer()
        if self._show_prompt_layer(layer, "Point prompts") and layer is not None:
            layer.mode = "add"
            self._prepare_result(POINTS)

    def start_box(self) -> None:
        """Select the ``Bounding Box`` layer in rectangle mode (creating it, showing it if hidden);
        the result layer follows on the next event-loop turn."""
        layer = self.controller.box_layer()
        if self._show_prompt_layer(layer, "Box prompts") and layer is not None:
            layer.mode = "add_rectangle"
            self._prepare_result(BOX)

    def _prepare_result(self, channel: str) -> None:
        """Make ``channel``'s result layer on the next turn of the event loop, not in this one.

        Each new napari layer freezes the window while napari builds it: one layer per turn
        keeps each freeze to one layer's, and the first answer finds its layer ready.
        """
        next_turn(lambda: self.controller.prepare_result_layer(channel))

    def _show_prompt_layer(self, layer: Any, what: str) -> bool:
        """Make a prompt layer visible and active; say why not when there is no image."""
        if layer is None:
            self.controller.notify("warning", f"{what}: {NO_IMAGE}")
            return False
        if not layer.visible:
            layer.visible = True
            self.controller.notify(
                "info", f"{layer.name} was hidden; it is shown again so that clicks add prompts."
            )
        self.viewer.layers.selection.active = layer
        return True


class ModeBox(QGroupBox):
    """Add or Refine label (operation, labels layer, label id, Pick), and Add without overwriting."""

    def __init__(
        self, viewer: napari.viewer.Viewer, controller: Controller, parent: QWidget | None = None
    ) -> None:
        super().__init__("Labeling mode", parent)
        self.viewer = viewer
        self.controller = controller
        self._cancel_pick = lambda: None
        form = QFormLayout(self)
        self.add_radio, self.refine_radio = QRadioButton("Add (new label)"), QRadioButton("Refine label")
        self.add_radio.setChecked(True)
        group = QButtonGroup(self)
        row = QHBoxLayout()
        for radio in (self.add_radio, self.refine_radio):
            group.addButton(radio)
            row.addWidget(radio)
        form.addRow(row)
        self.keep_labels = QCheckBox("Add without overwriting")
        self.keep_labels.setToolTip(ONLY_BACKGROUND_TIP)
        self.keep_labels.toggled.connect(self._set_only_background)
        self.keep_labels.setChecked(user_settings.load(ONLY_BACKGROUND_KEY, True))
        self._set_only_background(self.keep_labels.isChecked())
        form.addRow(self.keep_labels)
        self.refine_op = QComboBox()
        self.refine_op.addItems([m.value for m in LabelMode if m is not LabelMode.ADD])
        self.refine_layer = LayerCombo(viewer, Labels)
        self.refine_id, self.pick_button, row = label_id_row(0, self.pick_refine_label)
        form.addRow("Operation", self.refine_op)
        form.addRow("Labels layer", self.refine_layer)
        form.addRow("Label id", row)
        group.buttonToggled.connect(self._update_mode)
        self.refine_op.currentIndexChanged.connect(self._update_mode)
        self.refine_id.valueChanged.connect(self._update_mode)
        self.refine_layer.layer_changed.connect(self._update_mode)
        self._update_mode()

    def _set_only_background(self, on: bool) -> None:
        """New objects (Add, AUTO-SEGMENT) fill only background, or paint over labels; kept between runs."""
        self.controller.results.only_background = bool(on)
        user_settings.save(ONLY_BACKGROUND_KEY, bool(on))

    def _update_mode(self, *_args: Any) -> None:
        refine = self.refine_radio.isChecked()
        for widget in (self.refine_op, self.refine_layer, self.refine_id, self.pick_button):
            widget.setEnabled(refine)
        mode = LabelMode(self.refine_op.currentText()) if refine else LabelMode.ADD
        self.controller.set_mode(mode, self.refine_layer.layer(), self.refine_id.value())

    def pick_refine_label(self) -> None:
        """Wait for a click on a region of the refine layer (the button says so meanwhile)."""
        layer = self.refine_layer.layer()
        if layer is None:
            self.controller.notify("warning", "Pick: choose the labels layer to refine first.")
            return
        self._cancel_pick()
        self.pick_button.setText(PICK_WAITING)
        self._cancel_pick = pick_once(
            self.viewer, layer, self.refine_id.setValue, on_end=lambda: self.pick_button.setText("Pick")
        )

    def shutdown(self) -> None:
        """Stop waiting for a Pick click."""
        self._cancel_pick()
