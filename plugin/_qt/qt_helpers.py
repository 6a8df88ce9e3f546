"""Small Qt pieces shared by the widgets: GUI-thread dispatch, coalescing timers, layer pickers,
the progress of long tasks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from napari.utils.progress import cancelable_progress
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from plugin._qt import off_thread
from plugin.jobs.context import DuringStoreWrites

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer


class GuiDispatcher(QObject):
    """``dispatch(fn)`` from any thread runs ``fn()`` on the thread that created this object (the GUI).

    Calls are queued (never run inline), so ``dispatch`` also defers work
    when called from the GUI thread itself. A call that arrives while a label
    store is written in a thread (:func:`plugin._qt.off_thread.run_keeping_window_alive`)
    waits for that write, in order, unless it is a
    :class:`plugin.jobs.context.DuringStoreWrites` (progress).
    """

    _call = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._call.connect(self._run, Qt.ConnectionType.QueuedConnection)

    def __call__(self, fn: Callable[[], None]) -> None:
        try:
            self._call.emit(fn)
        except RuntimeError:  # the widget is gone (napari closed): nothing left to update
            pass

    def _run(self, fn: Callable[[], None]) -> None:
        if off_thread.writing() and not isinstance(fn, DuringStoreWrites):
            off_thread.hold(self, fn)
            return
        fn()


class Coalescer(QObject):
    """``schedule(fn)`` runs ``fn`` once after ``delay_ms``, however often it was scheduled meanwhile."""

    def __init__(self, delay_ms: int = 30, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pending: dict[Callable[[], None], None] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self._flush)

    def __call__(self, fn: Callable[[], None]) -> None:
        self._pending[fn] = None  # bound methods of one object compare equal: one call each
        try:
            self._timer.start()
        except RuntimeError:  # the owning widget was destroyed (viewer closed): nothing to refresh
            self._pending.clear()

    @property
    def pending(self) -> bool:
        """Whether calls are scheduled that have not run yet."""
        return bool(self._pending)

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for fn in pending:
            fn()


class LayerCombo(QComboBox):
    """A combo box of the viewer's layers of one kind, kept in sync with the layer list.

    ``layer_changed(layer_or_None)`` is emitted when the chosen layer changes.

    Args:
        viewer: the viewer.
        kind: layer class (e.g. ``napari.layers.Image``).
        exclude: a predicate hiding some layers (e.g. the plugin's own names layers).
    """

    layer_changed = Signal(object)

    def __init__(
        self,
        viewer: napari.Viewer,
        kind: type,
        exclude: Callable[[Any], bool] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.kind = kind
        self.exclude = exclude or (lambda _layer: False)
        self._chosen: Any = None
        self._watched: set[Any] = set()
        self.currentIndexChanged.connect(self._on_index)
        events = viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved, events.reordered):
            emitter.connect(self.refresh)
        self.refresh()

    def layers(self) -> list[Any]:
        return [la for la in self.viewer.layers if isinstance(la, self.kind) and not self.exclude(la)]

    def layer(self) -> Any:
        """The chosen layer, or None."""
        layers = self.layers()
        index = self.currentIndex()
        if 0 <= index < len(layers) and layers[index].name == self.currentText():
            return layers[index]
        return None

    def set_layer(self, layer: Layer) -> None:
        self.refresh()
        index = self.findText(layer.name)
        if index >= 0:
            self.setCurrentIndex(index)

    def refresh(self, _event: Any = None) -> None:
        """Rebuild the list (keeping the chosen layer) when layers come, go or are renamed."""
        chosen = self._chosen
        layers = self.layers()
        names = [la.name for la in layers]
        if names != [self.itemText(i) for i in range(self.count())]:
            self.blockSignals(True)
            self.clear()
            self.addItems(names)
            if chosen in layers:
                self.setCurrentIndex(layers.index(chosen))
            self.blockSignals(False)
        for layer in layers:
            if layer.unique_id not in self._watched:
                self._watched.add(layer.unique_id)
                layer.events.name.connect(self.refresh)
        current = self.layer()
        if (current is None) != (chosen is None) or (current is not None and current != chosen):
            self._on_index(self.currentIndex())

    def _on_index(self, _index: int) -> None:
        self._chosen = self.layer()
        self.layer_changed.emit(self._chosen)


TURN_GAP_MS = 15
"""How long :func:`next_turn` waits. Not 0: Qt 6 runs a zero-delay single shot as a posted event,
before the timers that are due and the input that waits, so two slow steps joined that way are
one stall; after a delay they run behind them."""


def next_turn(work: Callable[[], Any]) -> None:
    """Run ``work`` on the GUI thread after the events that wait now (input, redraws, due timers):
    two slow napari steps made one after the other are two stalls, each half as long."""
    QTimer.singleShot(TURN_GAP_MS, work)


def button(text: str, slot: Callable[[], Any], tooltip: str = "") -> QPushButton:
    """A push button calling ``slot()`` when clicked."""
    widget = QPushButton(text)
    widget.clicked.connect(lambda _checked=False: slot())
    if tooltip:
        widget.setToolTip(tooltip)
    return widget


def label_id_row(minimum: int, pick: Callable[[], Any]) -> tuple[QSpinBox, QPushButton, QHBoxLayout]:
    """A label id box (``minimum`` .. 2**31 - 1) beside a Pick button that calls ``pick()``; and their row."""
    label_id = spin_box(minimum, 2**31 - 1)
    pick_button = button("Pick", pick, "Click a region in the viewer to choose its label")
    row = QHBoxLayout()
    row.addWidget(label_id, 1)
    row.addWidget(pick_button)
    return label_id, pick_button, row


def spin_box(minimum: int, maximum: int, value: int | None = None) -> QSpinBox:
    widget = QSpinBox()
    widget.setRange(minimum, maximum)
    widget.setValue(minimum if value is None else value)
    return widget


class _TaskProgress(cancelable_progress):
    """napari's progress with a cancel button (activity dock) that calls ``on_cancel``."""

    def __init__(self, desc: str, on_cancel: Callable[[], None]) -> None:
        self._on_cancel = on_cancel
        super().__init__(desc=desc, total=0)

    def cancel(self) -> None:
        super().cancel()
        self._on_cancel()


NAPARI_PROGRESS_EVERY_S = 0.25
"""napari's progress (activity dock) follows a task's steps at most this often. Each of its updates
runs a nested event loop (napari's bar calls ``QApplication.processEvents``); the widget's own bar
follows every step."""


class TaskProgress:
    """A long task shown in a widget's progress bar and in napari's progress (activity dock).

    The task's button starts it and, while it runs, reads ``busy_text`` and
    cancels it; napari's progress has a cancel button too. napari's progress
    is made on the event-loop turn after the start (the task's own first step,
    often a new result layer, is a turn of its own) and shows the newest step
    at most every :data:`NAPARI_PROGRESS_EVERY_S`.

    Args:
        button: the start/cancel button.
        bar: the widget's progress bar (hidden while idle).
        idle_text, busy_text: the button's labels.
    """

    def __init__(self, button: QPushButton, bar: QProgressBar, idle_text: str, busy_text: str) -> None:
        self.button, self.bar = button, bar
        self.idle_text, self.busy_text = idle_text, busy_text
        self.progress: _TaskProgress | None = None
        """napari's progress of the running task (None: idle, or not made yet)."""
        self._running = False
        self._started: tuple[str, Callable[[], None]] = ("", lambda: None)
        self._latest: tuple[float | None, float | None, str] | None = None
        self._shown_at = 0.0
        self._timer = QTimer(button)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._show_latest)
        bar.setVisible(False)

    @classmethod
    def in_form(
        cls, form: QFormLayout, text: str, slot: Callable[[], Any], tooltip: str, busy_text: str = ""
    ) -> TaskProgress:
        """A task whose button (``text``, calling ``slot``) and progress bar are new rows of ``form``;
        while it runs the button reads ``busy_text`` (default "Cancel ``text``")."""
        task = cls(button(text, slot, tooltip), QProgressBar(), text, busy_text or f"Cancel {text}")
        form.addRow(task.button)
        form.addRow(task.bar)
        return task

    @property
    def running(self) -> bool:
        return self._running

    def start(self, description: str, on_cancel: Callable[[], None]) -> None:
        """Show the task as started (unknown length until the first :meth:`step`)."""
        self.finish()
        self._running, self._started, self._latest = True, (description, on_cancel), None
        self.button.setText(self.busy_text)
        self.bar.setRange(0, 0)
        self.bar.setFormat(description)
        self.bar.setVisible(True)
        next_turn(self._show_napari_progress)

    def _show_napari_progress(self) -> None:
        if not self._running or self.progress is not None:
            return  # finished already, or made by an earlier start's turn
        self.progress = _TaskProgress(*self._started)
        self._show_latest()

    def step(self, done: float | None, total: float | None, text: str) -> None:
        """``done`` of ``total`` (None: unknown), with a line of text."""
        self.bar.setFormat(text)
        if done is not None and total is not None and total > 0:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * min(max(done / total, 0.0), 1.0)))
        self._latest = (done, total, text)
        if self.progress is None or self._timer.isActive():
            return  # shown when napari's progress is made, or when the timer fires
        wait_s = self._shown_at + NAPARI_PROGRESS_EVERY_S - time.monotonic()
        if wait_s > 0:
            self._timer.start(int(wait_s * 1000) + 1)
        else:
            self._show_latest()

    def _show_latest(self) -> None:
        """The newest step in napari's progress."""
        progress, latest = self.progress, self._latest
        if progress is None or latest is None:
            return
        done, total, text = latest
        self._shown_at = time.monotonic()
        progress.set_description(text)
        if done is None or total is None or total <= 0 or not float(total).is_integer():
            return
        if progress.total != int(total):
            progress.total = int(total)
        progress.n = int(done)
        progress.update(0)

    def finish(self) -> None:
        """Back to idle: napari's progress closes, the bar hides, the button starts again."""
        self._running = False
        self._timer.stop()
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        self.bar.setVisible(False)
        self.button.setText(self.idle_text)
