"""AUTO-SEGMENT the current slice, or every slice of the stack ("AUTO-SEGMENT STACK").

Thin: :meth:`plugin.jobs.controller.Controller.run_auto` (one slice) and
:meth:`plugin.jobs.auto_stack.AutoStack.run` (``StackJobs.auto_stack``) (the stack) do the work;
each button starts its task and, while it runs, cancels it. Progress shows
in the box and in napari's activity dock (with its own cancel button).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QSpinBox,
    QWidget,
)

from plugin._qt.qt_helpers import TaskProgress, spin_box
from plugin.jobs.auto_region import REGIONS
from plugin.jobs.stack_runs import AUTO_STACK
from plugin.user_settings import load, save
from protocol.wire.automask import LIMITS

if TYPE_CHECKING:
    from plugin.jobs.controller import Controller

IOU_KEY, STABILITY_KEY, MIN_AREA_KEY = "auto/pred_iou_thresh", "auto/stability_score_thresh", "auto/min_area"
TILING_KEY, TILE_SIZE_KEY, HALO_KEY = "auto/tiling", "auto/tile_size", "auto/tile_halo"
LINK_KEY, REGION_KEY = "auto/link_stack", "auto/region"
REGION_TIP = (
    "AUTO-SEGMENT looks at the whole slice, only the part shown in the canvas, or only the newest "
    "rectangle of the Bounding Box layer: only tiles covering it are sent, only it is written"
)
LINK_TIP = (
    "AUTO-SEGMENT STACK: an object found on neighbouring slices (overlapping) keeps one id through "
    "z or t; off: every slice's objects get their own ids"
)
TILING_TIP = (
    "A slice larger than the model's input (1024 px) is segmented as tiles at native resolution, "
    "spread over all workers, and stitched; off: the slice is sent whole (seen downsampled)"
)
IOU_TIP = "Keep objects the model rates at least this good (lower finds more on faint images)"
STABILITY_TIP = "Keep objects whose outline is at least this stable (lower finds more)"
STACK_TIP = (
    "Segment every slice of the current stack (along the first non-displayed axis) into "
    "AutoSeg_mask, one slice at a time (large slices in tiles); with 'One id through z/t' an object "
    "keeps its id from slice to slice, else ids are unique per slice. One undo step."
)


def fraction_box(value: float, tip: str) -> QDoubleSpinBox:
    """A 0..1 box in steps of 0.05."""
    box = QDoubleSpinBox()
    box.setRange(0.0, 1.0)
    box.setSingleStep(0.05)
    box.setDecimals(2)
    box.setValue(value)
    box.setToolTip(tip)
    return box


class AutoBox(QGroupBox):
    """AUTO-SEGMENT settings (kept between napari runs), the slice and stack buttons, their progress."""

    def __init__(self, controller: Controller, parent: QWidget | None = None) -> None:
        super().__init__("Automatic segmentation", parent)
        self.controller = controller
        form = QFormLayout(self)
        defaults = controller.auto_settings
        low, high = LIMITS["points_per_side"]
        self.points_per_side = spin_box(int(low), int(high), defaults.points_per_side)
        self.points_per_side.setToolTip("Grid of prompts per side; more finds smaller objects but is slower")
        form.addRow("Points per side", self.points_per_side)
        self.iou_thresh = fraction_box(load(IOU_KEY, defaults.pred_iou_thresh), IOU_TIP)
        form.addRow("Predicted IoU ≥", self.iou_thresh)
        self.stability_thresh = fraction_box(
            load(STABILITY_KEY, defaults.stability_score_thresh), STABILITY_TIP
        )
        form.addRow("Stability ≥", self.stability_thresh)
        self.min_area = spin_box(0, 2**31 - 1, load(MIN_AREA_KEY, defaults.min_area))
        self.min_area.setSuffix(" px")
        self.min_area.setToolTip("Objects smaller than this are dropped (0 keeps all)")
        form.addRow("Minimum area", self.min_area)
        self.tiling = self._switch(form, "Tiles for large slices", "tiling", TILING_KEY, TILING_TIP)
        self.tile_size = spin_box(256, 4096, load(TILE_SIZE_KEY, defaults.tile_size))
        self.tile_size.setSuffix(" px")
        self.tile_size.setToolTip("Tile side (the model's input, 1024, sees tiles at native resolution)")
        form.addRow("Tile size", self.tile_size)
        self.tile_halo = spin_box(0, 1024, load(HALO_KEY, defaults.tile_halo))
        self.tile_halo.setSuffix(" px")
        self.tile_halo.setToolTip("Overlap between tiles; make it larger than the largest object's radius")
        form.addRow("Tile overlap", self.tile_halo)
        boxes: dict[str, tuple[QSpinBox | QDoubleSpinBox, str | None]] = {
            "points_per_side": (self.points_per_side, None),
            "pred_iou_thresh": (self.iou_thresh, IOU_KEY),
            "stability_score_thresh": (self.stability_thresh, STABILITY_KEY),
            "min_area": (self.min_area, MIN_AREA_KEY),
            "tile_size": (self.tile_size, TILE_SIZE_KEY),
            "tile_halo": (self.tile_halo, HALO_KEY),
        }
        for name, (box, key) in boxes.items():
            box.valueChanged.connect(lambda value, n=name, k=key: self._changed(n, k, value))
            self._changed(name, None, box.value())  # the stored values are the controller's too
        self.region = QComboBox()
        for key, title in REGIONS.items():
            self.region.addItem(title, key)
        self.region.setToolTip(REGION_TIP)
        self.region.currentIndexChanged.connect(lambda _i: self.set_region(str(self.region.currentData())))
        stored = str(load(REGION_KEY, defaults.region))
        self.set_region(stored if stored in REGIONS else defaults.region)
        form.addRow("Region", self.region)
        self.slice_task = TaskProgress.in_form(
            form, "AUTO-SEGMENT", self.toggle_slice, "Segment the current slice"
        )
        self.auto_button, self.progress_bar = self.slice_task.button, self.slice_task.bar
        self.link_stack = self._switch(form, "One id through z/t", "link_stack", LINK_KEY, LINK_TIP)
        self.stack_task = TaskProgress.in_form(form, "AUTO-SEGMENT STACK", self.toggle_stack, STACK_TIP)
        self.stack_button, self.stack_bar = self.stack_task.button, self.stack_task.bar
        self._connected = False

    def _switch(self, form: QFormLayout, text: str, name: str, key: str, tip: str) -> QCheckBox:
        """A check box row for the on/off setting ``name``, stored under ``key``."""
        box = QCheckBox(text)
        box.setChecked(load(key, getattr(self.controller.auto_settings, name)))
        box.setToolTip(tip)
        box.toggled.connect(lambda on: self._changed(name, key, bool(on)))
        self._changed(name, None, box.isChecked())
        form.addRow(box)
        return box

    def _changed(self, name: str, key: str | None, value: float | str) -> None:
        """One setting changed: the controller uses it from now on, and it is stored under ``key``."""
        changes: dict[str, Any] = {name: value}
        self.controller.auto_settings = replace(self.controller.auto_settings, **changes)
        if key is not None:
            save(key, value)

    def set_region(self, key: str) -> None:
        """Choose where AUTO-SEGMENT looks: a key of :data:`plugin.jobs.auto_region.REGIONS`."""
        index = self.region.findData(key)
        if index < 0:
            raise ValueError(f"unknown AUTO-SEGMENT region {key!r}; choose one of {', '.join(REGIONS)}")
        if index != self.region.currentIndex():
            self.region.setCurrentIndex(index)  # calls back here with the same key
            return
        self._changed("region", REGION_KEY, key)

    def toggle_slice(self) -> None:
        """Start AUTO-SEGMENT on the current slice, or cancel the running one."""
        if self.slice_task.running:
            self.controller.cancel_auto()
            return
        self.slice_task.start("AUTO-SEGMENT", self.controller.cancel_auto)
        if not self.controller.run_auto(lambda f, text: self.slice_task.step(f, 1.0, text), self._done):
            self._done(False)

    def toggle_stack(self) -> None:
        """Start AUTO-SEGMENT STACK, or cancel the running one."""
        if self.stack_task.running:
            self.controller.stack.cancel(AUTO_STACK)
            return
        self.stack_task.start("AUTO-SEGMENT STACK", lambda: self.controller.stack.cancel(AUTO_STACK))
        if not self.controller.stack.auto_stack(self.stack_task.step, self._stack_done):
            self._stack_done(False)

    def _done(self, _completed: bool) -> None:
        self.slice_task.finish()
        self.set_connected(self._connected)

    def _stack_done(self, _completed: bool) -> None:
        self.stack_task.finish()
        self.set_connected(self._connected)

    def set_connected(self, connected: bool) -> None:
        """Enable starting only while a worker answers (a running task can always be cancelled)."""
        self._connected = connected
        self.auto_button.setEnabled(connected or self.slice_task.running)
        self.stack_button.setEnabled(connected or self.stack_task.running)

    def shutdown(self) -> None:
        self.controller.cancel_auto()
        self.slice_task.finish()
        self.stack_task.finish()
