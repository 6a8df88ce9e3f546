"""The "SAM2 Segmentation" dock widget: connection, prompts, labeling mode, AUTO-SEGMENT.

Thin: state lives in :class:`plugin.controller.Controller`, network work in
:mod:`plugin.session` / :mod:`plugin.backend` on background threads; results
come back to the GUI thread through :class:`plugin.qt_helpers.GuiDispatcher`.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels
from napari.utils import progress
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from plugin.backend import BackendStatus, LocalBackend, default_address, default_model, establish, probe
from plugin.controller import Applied, Controller
from plugin.label_ops import LabelMode
from plugin.name_widget import NameWidget
from plugin.picking import pick_once
from plugin.qt_helpers import GuiDispatcher, LayerCombo, button, spin_box
from plugin.session import Session
from protocol.client import LatestOnly
from protocol.errors import ClientError, ProtocolError

if TYPE_CHECKING:
    import napari.viewer

REFRESH_INTERVAL_MS = 10_000
_OK, _BAD = "color: #3c3;", "color: #e55;"
ADDRESS_TIP = (
    "Broker frontend (env SAM2_BROKER_ADDRESS). At a local address where no broker answers, "
    "the plugin starts an embedded backend and stops it when napari closes."
)
CPU_NOTICE = (
    "SAM2 runs on the CPU here: the first prompt on each new image takes a few seconds "
    "(image encoding); later prompts on it are quick."
)


class SamWidget(QWidget):
    """Dock widget: talk to a SAM2 backend and segment the chosen image."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        self._watched_windows: list[QWidget] = []
        super().__init__(parent)
        self.viewer = viewer
        self.dispatch = GuiDispatcher(self)
        self.controller = Controller(viewer, self.dispatch)
        self.controller.listeners.append(self._on_applied)
        self.status = BackendStatus(default_address(), error="not connected yet")
        self.local: LocalBackend | None = None
        self._connector: LatestOnly[Any] = LatestOnly(name="sam2-connect")
        self._auto_progress: progress | None = None
        self._cancel_pick = lambda: None
        self._closed = False
        self._cancel_connect = threading.Event()
        layout = QVBoxLayout(self)
        for box in (self._connection_box(), self._prompt_box(), self._mode_box(), self._auto_box()):
            layout.addWidget(box)
        self.names = NameWidget(viewer, self)
        layout.addWidget(self.names)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        layout.addWidget(self.result)
        layout.addStretch(1)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_INTERVAL_MS)
        self._timer.timeout.connect(self.refresh_status)
        self._install_shutdown_hooks()
        self._set_connected(False)
        self.connect_backend()

    # -- layout -------------------------------------------------------------------

    def _connection_box(self) -> QGroupBox:
        box = QGroupBox("Connection")
        form = QFormLayout(box)
        self.address = QLineEdit(default_address())
        self.address.setToolTip(ADDRESS_TIP)
        self.connect_button = button("Connect", self.connect_backend)
        row = QHBoxLayout()
        row.addWidget(self.address, 1)
        row.addWidget(self.connect_button)
        form.addRow("Broker", row)
        self.model = QComboBox()
        self.model.addItem(default_model())
        self.model.activated.connect(lambda _i: self.connect_backend())
        form.addRow("Model", self.model)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        form.addRow(self.status_label)
        self.image_combo = LayerCombo(self.viewer, Image)
        self.image_combo.layer_changed.connect(self._on_image)
        form.addRow("Image", self.image_combo)
        self._on_image(self.image_combo.layer())
        return box

    def _prompt_box(self) -> QGroupBox:
        box = QGroupBox("Prompts")
        grid = QVBoxLayout(box)
        row = QHBoxLayout()
        self.points_button = button("Point prompts", self.start_points)
        self.box_button = button("Box prompts", self.start_box)
        self.new_button = button("New object (N)", self.controller.new_object)
        for widget in (self.points_button, self.box_button, self.new_button):
            row.addWidget(widget)
        grid.addLayout(row)
        self.negative = QCheckBox("Negative points (or hold Shift / Alt / Ctrl while clicking)")
        self.negative.toggled.connect(self.controller.set_negative)
        grid.addWidget(self.negative)
        return box

    def _mode_box(self) -> QGroupBox:
        box = QGroupBox("Labeling mode")
        form = QFormLayout(box)
        self.add_radio, self.refine_radio = QRadioButton("Add (new label)"), QRadioButton("Refine label")
        self.add_radio.setChecked(True)
        group = QButtonGroup(box)
        row = QHBoxLayout()
        for radio in (self.add_radio, self.refine_radio):
            group.addButton(radio)
            row.addWidget(radio)
        form.addRow(row)
        self.refine_op = QComboBox()
        self.refine_op.addItems([m.value for m in LabelMode if m is not LabelMode.ADD])
        self.refine_layer = LayerCombo(self.viewer, Labels)
        self.refine_id = spin_box(0, 2**31 - 1)
        self.pick_button = button("Pick", self.pick_refine_label)
        self.pick_button.setToolTip("Click a region in the viewer to choose its label")
        row = QHBoxLayout()
        row.addWidget(self.refine_id, 1)
        row.addWidget(self.pick_button)
        form.addRow("Operation", self.refine_op)
        form.addRow("Labels layer", self.refine_layer)
        form.addRow("Label id", row)
        group.buttonToggled.connect(self._update_mode)
        self.refine_op.currentIndexChanged.connect(self._update_mode)
        self.refine_id.valueChanged.connect(self._update_mode)
        self.refine_layer.layer_changed.connect(self._update_mode)
        self._update_mode()
        return box

    def _auto_box(self) -> QGroupBox:
        box = QGroupBox("Automatic segmentation (current slice)")
        form = QFormLayout(box)
        self.points_per_side = spin_box(1, 128, 16)
        self.points_per_side.setToolTip("Grid of prompts per side; more finds smaller objects but is slower")
        form.addRow("Points per side", self.points_per_side)
        self.auto_button = button("AUTO-SEGMENT", self.toggle_auto)
        form.addRow(self.auto_button)
        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        form.addRow(self.progress_bar)
        return box

    # -- connection -----------------------------------------------------------------

    def connect_backend(self) -> None:
        """Connect (or reconnect) to the broker in the address field, off the GUI thread."""
        address, model = self.address.text().strip(), self.model.currentText() or default_model()
        if self.local is not None and not self.local.running:
            self.local.stop()  # the embedded backend died: a new one may start
            self.local = None
        self._set_connected(False)
        self._show_status(f"Connecting to {address}…", ok=True)

        def report(text: str) -> None:
            self.dispatch(lambda: self._show_status(text, ok=True))

        cancel = self._cancel_connect

        def delivered(result: tuple[BackendStatus, LocalBackend | None]) -> None:
            if cancel.is_set() and result[1] is not None:
                result[1].stop()  # napari closed while it started
            else:
                self.dispatch(lambda: self._connected(*result))

        allow_embedded = self.local is None
        self._connector.submit(
            lambda: establish(address, model, report, allow_embedded=allow_embedded, cancel=cancel),
            delivered,
            lambda error: self.dispatch(
                lambda: self._connected(BackendStatus(address, error=str(error)), None)
            ),
        )

    def _connected(self, status: BackendStatus, local: LocalBackend | None) -> None:
        if self._closed:
            if local is not None:
                local.stop()
            return
        if local is not None:
            self.local = local
        self.status = status
        self.model.blockSignals(True)
        self.model.clear()
        self.model.addItems(sorted(status.services) or [status.model or default_model()])
        self.model.setCurrentText(status.model or default_model())
        self.model.blockSignals(False)
        if self.controller.session is not None:
            self.controller.session.close()
            self.controller.session = None
            self._timer.stop()
        if status.connected and status.model is not None:
            self.controller.session = Session(status.address, status.model, self.dispatch)
            self._timer.start()
            if status.on_cpu:
                self.controller.notify("info", CPU_NOTICE)
        self._set_connected(status.connected)
        self._show_status(status.describe(), ok=status.connected)
        if not status.connected:
            self.controller.notify("warning", f"SAM2: {status.describe()}")

    def refresh_status(self) -> None:
        """Every few seconds while a session exists: re-count workers; disable prompts while none answer."""
        if self._connector.busy or self.controller.session is None:
            return
        status = self.status

        def job() -> BackendStatus:
            try:
                services = probe(status.address)
            except (ClientError, ProtocolError) as e:
                return replace(status, error=f"lost the broker at {status.address} ({e}); retrying")
            return replace(status, services=services, error=None)

        self._connector.submit(job, lambda fresh: self.dispatch(lambda: self._refreshed(fresh)))

    def _refreshed(self, status: BackendStatus) -> None:
        if self.controller.session is None or status.address != self.status.address:
            return  # reconnected meanwhile
        self.status = status
        self._set_connected(status.connected)
        self._show_status(status.describe(), ok=status.connected)

    def _show_status(self, text: str, ok: bool) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet(_OK if ok else _BAD)

    def _set_connected(self, connected: bool) -> None:
        for widget in (self.points_button, self.box_button, self.new_button, self.auto_button):
            widget.setEnabled(connected)
        self.connect_button.setText("Reconnect" if connected else "Connect")

    # -- prompts and modes ------------------------------------------------------------

    def _on_image(self, layer: Image | None) -> None:
        self.controller.image = layer

    def start_points(self) -> None:
        """Select the ``Prompt Points`` layer in add mode (creating it)."""
        layer = self.controller.points_layer()
        if layer is not None:
            self.viewer.layers.selection.active = layer
            layer.mode = "add"

    def start_box(self) -> None:
        """Select the ``Bounding Box`` layer in rectangle mode (creating it)."""
        layer = self.controller.box_layer()
        if layer is not None:
            self.viewer.layers.selection.active = layer
            layer.mode = "add_rectangle"

    def _update_mode(self, *_args: Any) -> None:
        refine = self.refine_radio.isChecked()
        for widget in (self.refine_op, self.refine_layer, self.refine_id, self.pick_button):
            widget.setEnabled(refine)
        mode = LabelMode(self.refine_op.currentText()) if refine else LabelMode.ADD
        self.controller.set_mode(mode, self.refine_layer.layer(), self.refine_id.value())

    def pick_refine_label(self) -> None:
        layer = self.refine_layer.layer()
        if layer is not None:
            self._cancel_pick()
            self._cancel_pick = pick_once(self.viewer, layer, self.refine_id.setValue)

    def _on_applied(self, applied: Applied) -> None:
        ids = ", ".join(map(str, applied.label_ids[:5])) + ("…" if len(applied.label_ids) > 5 else "")
        what = f"label {ids}" if applied.label_ids else "nothing (empty mask)"
        self.result.setText(
            f"{applied.channel}: {what} in {applied.layer_name}, {applied.pixels} pixels changed"
        )

    # -- auto -----------------------------------------------------------------------------

    def toggle_auto(self) -> None:
        """Start AUTO-SEGMENT on the current slice, or cancel the running one."""
        if self._auto_progress is not None:
            self.controller.cancel_auto()
            return
        settings = self.controller.auto_settings
        self.controller.auto_settings = replace(settings, points_per_side=self.points_per_side.value())
        self._auto_progress = progress(total=0, desc="AUTO-SEGMENT")
        if self.controller.run_auto(self._auto_step, self._auto_done):
            self.auto_button.setText("Cancel AUTO-SEGMENT")
            self.progress_bar.setRange(0, 0)
            self.progress_bar.setVisible(True)
        else:
            self._auto_done(False)

    def _auto_step(self, fraction: float | None, text: str) -> None:
        self.progress_bar.setFormat(text)
        if fraction is not None:
            self.progress_bar.setRange(0, 100)
            self.progress_bar.setValue(int(100 * fraction))
        if self._auto_progress is not None:
            self._auto_progress.set_description(text)

    def _auto_done(self, _ok: bool) -> None:
        if self._auto_progress is not None:
            self._auto_progress.close()
            self._auto_progress = None
        self.progress_bar.setVisible(False)
        self.auto_button.setText("AUTO-SEGMENT")

    # -- shutdown ---------------------------------------------------------------------------

    def _install_shutdown_hooks(self) -> None:
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    def event(self, event: QEvent | None) -> bool:
        if event is not None and event.type() == QEvent.Type.ParentChange:
            self._watch_ancestors()
        return super().event(event)

    def _watch_ancestors(self) -> None:
        """Filter the events of every ancestor: re-parenting (docking) and the main window's close."""
        widget = self.parentWidget()
        while widget is not None:
            if all(widget is not w for w in self._watched_windows):
                widget.installEventFilter(self)
                self._watched_windows.append(widget)
            widget = widget.parentWidget()

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        if event is None or not isinstance(watched, QWidget):
            return False
        if event.type() == QEvent.Type.ParentChange:
            self._watch_ancestors()
        elif event.type() == QEvent.Type.Close and watched is self.window():
            if not event.spontaneous():
                self.shutdown()  # viewer.close() or quitting: it will close
            else:  # the user's click may still be refused by a confirmation dialog
                QTimer.singleShot(0, lambda: None if watched.isVisible() else self.shutdown())
        return False

    def shutdown(self) -> None:
        """Stop timers, sessions and the embedded backend (napari is closing)."""
        if self._closed:
            return
        self._closed = True
        self._timer.stop()
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.disconnect(self.shutdown)
        for widget in self._watched_windows:
            try:
                widget.removeEventFilter(self)
            except RuntimeError:  # already deleted by Qt
                pass
        self._watched_windows.clear()
        self._cancel_connect.set()  # abandons a local backend that is still starting
        self._connector.wait_idle(10.0)
        self._cancel_pick()
        self.controller.cancel_auto()
        if self.controller.session is not None:
            self.controller.session.close(timeout_s=0.5)
            self.controller.session = None
        self.names.shutdown()
        if self.local is not None:
            self.local.stop()
            self.local = None
