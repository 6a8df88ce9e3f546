"""The "SAM2 Segmentation" dock widget: connection, then three tabs.

* **Segment**: prompts and labeling mode (:mod:`plugin._qt.prompt_widget`), AUTO-SEGMENT
  (slice and stack: :mod:`plugin._qt.auto_widget`), Find all (:mod:`plugin._qt.find_all_widget`),
  embeddings ahead (prefetch, Encode stack: :mod:`plugin._qt.encode_widget`), names;
* **Labels**: the label list (:mod:`plugin._qt.label_table_widget`), propagation
  (:mod:`plugin._qt.propagate_widget`) and export (:mod:`plugin._qt.export_widget`);
* **Backend**: recent backend events (:mod:`plugin._qt.events_widget`).

Thin: state lives in :class:`plugin.jobs.controller.Controller`, network work in
:mod:`plugin.connection.session` / :mod:`plugin.connection.backend` on background threads; results
come back to the GUI thread through :class:`plugin._qt.qt_helpers.GuiDispatcher`.

The connection (:mod:`plugin._qt.backend_link`, mixed in) is re-checked every
few seconds. When the backend stops answering, prompts are disabled, a notification says so (labels already
made are untouched: they live in napari), and the check repeats faster
until the backend is back; then a fresh session starts and prompts work again.
Meanwhile a click is refused at once (``Controller.unavailable`` says why).
An embedded backend reports its own crashes and restarts
(:class:`plugin.connection.backend.LocalBackend` listeners), so the status follows
them at once; choosing another broker address stops it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from napari.layers import Image
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QScrollArea,
    QSizePolicy,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from plugin._qt.auto_widget import AutoBox
from plugin._qt.backend_link import RECONNECT_NOW, REFRESH_INTERVAL_MS, BackendLink
from plugin._qt.box_question import ask_box_resolution
from plugin._qt.encode_widget import EncodeBox
from plugin._qt.events_widget import EventsPanel
from plugin._qt.export_widget import ExportBox, layer_provenance, matching_image
from plugin._qt.find_all_widget import FindAllBox
from plugin._qt.label_table_widget import LabelTable
from plugin._qt.name_widget import NameWidget
from plugin._qt.off_thread import run_keeping_window_alive
from plugin._qt.prompt_widget import ModeBox, PromptBox
from plugin._qt.propagate_widget import PropagateBox
from plugin._qt.qt_helpers import GuiDispatcher, LayerCombo, button, next_turn
from plugin._qt.tracks_widget import TracksBox
from plugin.calibration import CalibrationOffers, napari_offer
from plugin.connection.backend import (
    BackendStatus,
    LocalBackend,
    default_address,
    default_model,
)
from plugin.connection.latest_only import LatestOnly
from plugin.connection.link_state import LinkTracker
from plugin.jobs.controller import Applied, Controller, same_layer
from plugin.view import napari_redraw
from plugin.view.layers import warm_up_labels, warm_up_text_glyphs
from plugin.view.long_lived import LongLivedObjects
from protocol.formats.provenance import Provenance

if TYPE_CHECKING:
    import napari.viewer
    from napari.layers import Labels

ADDRESS_TIP = (
    "Broker frontend (env SAM2_BROKER_ADDRESS). At a local address where no broker answers, "
    "the plugin starts an embedded backend and stops it when napari closes."
)


class SamWidget(BackendLink, QWidget):
    """Dock widget: talk to a SAM2 backend and segment the chosen image."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        self._watched_windows: list[QWidget] = []
        super().__init__(parent)
        self.viewer = viewer
        napari_redraw.install()  # an answer on labels wider than the GPU's textures redraws only its box
        self.dispatch = GuiDispatcher(self)
        self.controller = Controller(viewer, self.dispatch)
        self.long_lived = LongLivedObjects(viewer, self.dispatch)
        # the first result layer's imports, off the GUI thread; then what exists is frozen
        warm_up_labels(then=lambda: self.dispatch(self.long_lived.freeze))
        # the glyphs napari's first text visual (a prompt layer's) measures, on a turn of their own
        next_turn(lambda: warm_up_text_glyphs(viewer))
        # pyramid pastes, undo and redo write their store in a thread: the window keeps drawing
        self.controller.results.off_gui = self.controller.histories.off_gui = run_keeping_window_alive
        self.controller.listeners.append(self._on_applied)
        self.controller.prompts.box_tiles.choose = lambda view: ask_box_resolution(
            self, view, self.controller.prompts.box_tiles
        )
        self.status = BackendStatus(default_address(), error="not connected yet")
        self.local: LocalBackend | None = None
        self._connector: LatestOnly[Any] = LatestOnly(name="sam2-connect")
        self._closed = False
        self._lost = False
        self._missed = 0
        self._answered = 0
        self.link = LinkTracker()
        """The backend's state, since when, and what is retried (:mod:`plugin.connection.link_state`)."""
        self._cancel_connect = threading.Event()
        self.calibration_offers = CalibrationOffers(napari_offer)  # an image in pixels whose file has µm
        layout = QVBoxLayout(self)
        layout.addWidget(self._connection_box())
        self.tabs = QTabWidget()
        self.tabs.addTab(self._segment_tab(), "Segment")
        self.tabs.addTab(self._labels_tab(), "Labels")
        self.events_panel = EventsPanel(self.controller.events, self.dispatch)
        self.tabs.addTab(self.events_panel, "Backend")
        layout.addWidget(self.tabs, 1)
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
        self.model_info = QLabel("")  # family, preprocessing, licence, ops of the chosen model
        self.model_info.setWordWrap(True)
        form.addRow("", self.model_info)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        # QFormLayout does not give a wrapped label the height of its lines: reserve two.
        self.status_label.setMinimumHeight(2 * self.status_label.fontMetrics().lineSpacing() + 4)
        self.status_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        form.addRow(self.status_label)
        self.image_combo = LayerCombo(self.viewer, Image)
        self.image_combo.layer_changed.connect(self._on_image)
        self.image_combo.setToolTip("The image prompts go to: follows the image you select or add")
        form.addRow("Image", self.image_combo)
        self._on_image(self.image_combo.layer())
        self.viewer.layers.selection.events.active.connect(self._follow_image)
        self.viewer.layers.events.inserted.connect(self._follow_image)
        return box

    def _segment_tab(self) -> QScrollArea:
        page = QWidget()
        column = QVBoxLayout(page)
        self.auto_box = AutoBox(self.controller)
        self.encode_box = EncodeBox(self.controller)
        self.find_all_box = FindAllBox(self.controller)
        self.prompt_box = PromptBox(self.viewer, self.controller)
        self.mode_box = ModeBox(self.viewer, self.controller)
        for box in (self.prompt_box, self.mode_box, self.auto_box, self.find_all_box, self.encode_box):
            column.addWidget(box)
        prompts, modes = self.prompt_box, self.mode_box  # the controls tests and scripts reach for
        self.points_button, self.box_button = prompts.points_button, prompts.box_button
        self.new_button, self.negative = prompts.new_button, prompts.negative
        self.start_points, self.start_box = prompts.start_points, prompts.start_box
        self.add_radio, self.refine_radio = modes.add_radio, modes.refine_radio
        self.keep_labels, self.refine_op = modes.keep_labels, modes.refine_op
        self.refine_layer, self.refine_id = modes.refine_layer, modes.refine_id
        self.pick_button = modes.pick_button
        self.points_per_side = self.auto_box.points_per_side
        self.auto_button, self.progress_bar = self.auto_box.auto_button, self.auto_box.progress_bar
        self.names = NameWidget(self.viewer, self)
        self.find_all_box.on_named = self.names.attach
        column.addWidget(self.names)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        column.addWidget(self.result)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(page)
        return scroll

    def _labels_tab(self) -> QWidget:
        page = QWidget()
        column = QVBoxLayout(page)
        self.labels = LabelTable(self.viewer, self.controller)
        self.labels.on_named = self.names.attach
        self.propagate_box = PropagateBox(self.controller, self.labels)
        self.export_box = ExportBox(self.viewer, lambda: self.labels.layer, self._export_provenance)
        self.tracks_box = TracksBox(self.controller, self.labels)
        self.propagate_box.after_run = self.tracks_box.refresh  # a time-lapse's Tracks layer follows
        column.addWidget(self.labels, 1)
        column.addWidget(self.propagate_box)
        column.addWidget(self.tracks_box)
        column.addWidget(self.export_box)
        return page

    # -- connection -----------------------------------------------------------------

    def _export_provenance(self, layer: Labels, present: Sequence[int]) -> Provenance:
        """How ``layer`` (label ids ``present``) was made (model, checkpoint, prompts per label)."""
        status, image = self.status, matching_image(self.viewer, layer)
        return layer_provenance(
            layer, self.controller.slice_prompts, status.model, status.info, image, present
        )

    def _set_connected(self, connected: bool) -> None:
        """Enable what the chosen model's workers serve; grey out operations none of them offers."""
        offers = self.status.offers
        self.prompt_box.set_connected(connected and offers("segment"))
        self.auto_box.set_connected(connected and offers("auto"))
        self.find_all_box.set_connected(connected and offers("concept"))
        self.encode_box.set_connected(connected and offers("embed"))
        self.propagate_box.set_connected(connected and offers("propagate"))
        state = self.link.state
        lost = state is not None and state.was_connected
        self.connect_button.setText("Reconnect" if connected else RECONNECT_NOW if lost else "Connect")

    # -- prompts and modes ------------------------------------------------------------

    def _on_image(self, layer: Image | None) -> None:
        changed = not same_layer(layer, self.controller.image)
        self.controller.image = layer
        if layer is not None:
            self.calibration_offers.check(layer)
        if changed and layer is not None and hasattr(self, "result"):
            self.result.setText(f"Prompts now go to the image {layer.name}.")

    def _follow_image(self, event: Any = None) -> None:
        """The Image box follows the image layer the user selects or adds (other layers leave it)."""
        layer = getattr(event, "value", None)  # the inserted layer, or the newly active one
        if isinstance(layer, Image) and not same_layer(layer, self.controller.image):
            self.image_combo.set_layer(layer)

    def _on_applied(self, applied: Applied) -> None:
        ids = ", ".join(map(str, applied.label_ids[:5])) + ("…" if len(applied.label_ids) > 5 else "")
        what = f"label {ids}" if applied.label_ids else "nothing (empty mask)"
        image = self.controller.image
        where = f" on {image.name}" if image is not None else ""
        self.result.setText(
            f"{applied.channel}{where}: {what} in {applied.layer_name}, {applied.pixels} pixels changed"
        )

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
        self.mode_box.shutdown()
        self.auto_box.shutdown()
        self.find_all_box.shutdown()
        self.encode_box.shutdown()
        self.controller.stack.cancel()
        if self.controller.session is not None:
            self.controller.session.close(timeout_s=0.5)
            self.controller.session = None
        self.viewer.layers.selection.events.active.disconnect(self._follow_image)
        self.viewer.layers.events.inserted.disconnect(self._follow_image)
        self.names.shutdown()
        self.labels.shutdown()
        self.controller.close()
        self.long_lived.close()
        self.events_panel.shutdown()
        if self.local is not None:
            self.local.stop()
            self.local = None
