"""The dock widget's link to the backend: connect, re-check every second, notice loss and return.

Mixed into :class:`plugin._qt.widget.SamWidget` (the state it reads is declared
below). Connecting and checking run off the GUI thread (:class:`LatestOnly`);
results come back through the widget's dispatcher. A broker that misses
``MISSES_BEFORE_LOST`` checks in a row counts as lost; prompts are refused
(``Controller.unavailable`` says why) until ``CHECKS_BEFORE_BACK`` checks in a
row answer, then a fresh session starts. An embedded backend reports its own
crashes and restarts (:class:`plugin.connection.backend.LocalBackend` listeners).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QComboBox, QLabel, QLineEdit, QPushButton

from plugin._qt.qt_helpers import GuiDispatcher
from plugin.connection.backend import BackendStatus, LocalBackend, default_model, establish, probe
from plugin.connection.latest_only import LatestOnly
from plugin.connection.link_state import LinkTracker
from plugin.connection.session import Session
from plugin.events_log import CONNECT, DISCONNECT
from plugin.jobs.controller import Controller
from protocol.wire.errors import ClientError, ProtocolError

REFRESH_INTERVAL_MS = 1_000
"""How often a connected backend is checked (one small request to the broker): a broker restart
of a few seconds, or the last worker leaving, shows within the broker's liveness (3 s)."""
RETRY_INTERVAL_MS = 1_000
"""How often the connection is tried while the backend is lost, or was never there."""
MISSES_BEFORE_LOST = 2
"""Unanswered checks in a row before a connected broker counts as lost (the second is sent at once)."""
CHECKS_BEFORE_BACK = 2
"""Answered checks in a row (one per retry interval) before a lost backend counts as back: a worker
re-registering with a restarted broker can drop out once more a moment later."""
RECONNECT_NOW = "Reconnect now"
_OK, _BAD = "color: #3c3;", "color: #e55;"
CPU_NOTICE = (
    "SAM2 runs on the CPU here: the first prompt on each new image takes a few seconds "
    "(image encoding); later prompts on it are quick."
)


class BackendLink:
    """Connects :class:`plugin._qt.widget.SamWidget` to its backend and follows the link (a mixin)."""

    controller: Controller
    dispatch: GuiDispatcher
    status: BackendStatus
    local: LocalBackend | None
    link: LinkTracker
    address: QLineEdit
    model: QComboBox
    model_info: QLabel
    status_label: QLabel
    connect_button: QPushButton
    _connector: LatestOnly[Any]
    _cancel_connect: threading.Event
    _timer: QTimer
    _closed: bool
    _lost: bool
    _missed: int
    _answered: int

    def _set_connected(self, connected: bool) -> None:
        raise NotImplementedError

    def connect_backend(self) -> None:
        """Connect (or reconnect) to the broker in the address field, off the GUI thread."""
        address, model = self.address.text().strip(), self.model.currentText() or default_model()
        retired: LocalBackend | None = None
        if self.local is not None and (not self.local.running or address != self.local.frontend):
            # the embedded backend gave up, or the user chose another broker: stop it
            retired, self.local = self.local, None
            self.controller.unavailable = None
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

        def job() -> tuple[BackendStatus, LocalBackend | None]:
            if retired is not None:
                retired.stop()
            return establish(address, model, report, allow_embedded=allow_embedded, cancel=cancel)

        self._connector.submit(
            job,
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
            local.listeners.append(
                lambda text, up: self.dispatch(lambda: self._on_local_event(local, text, up))
            )
        self.controller.unavailable = None
        self.model.blockSignals(True)
        self.model.clear()
        self.model.addItems(sorted(status.services) or [status.model or default_model()])
        for index in range(self.model.count()):  # what each model is, on hover
            self.model.setItemData(
                index, status.model_summary(self.model.itemText(index)), Qt.ItemDataRole.ToolTipRole
            )
        self.model.setCurrentText(status.model or default_model())
        self.model.blockSignals(False)
        self.model_info.setText(status.model_summary())
        if status.connected and status.model is not None:
            self._new_session(status)
            if status.on_cpu:
                self.controller.notify("info", CPU_NOTICE)
        else:
            self._close_session()
        self._follow_link(status)

    def _new_session(self, status: BackendStatus) -> None:
        """A fresh session (fresh sockets, no request stuck behind a dead backend)."""
        self._close_session()
        assert status.model is not None
        events = self.controller.events
        self.controller.session = Session(status.address, status.model, self.dispatch, log=events)

    def _close_session(self) -> None:
        if self.controller.session is not None:
            self.controller.session.close(timeout_s=0.0)
            self.controller.session = None
            self.controller.stack.abandon()

    def refresh_status(self) -> None:
        """Every second or so: re-count the workers of the session's broker; without a session
        (docked before any worker registered, or the first connection failed) try to connect,
        quietly, until a worker appears. The status line and prompts follow."""
        if self._connector.busy or self._closed:
            return
        status = self.status
        if self.controller.session is None:
            address, model = status.address, self.model.currentText() or default_model()

            def connect() -> tuple[BackendStatus, LocalBackend | None]:
                fresh, local = establish(address, model, lambda _text: None, allow_embedded=False)
                if not fresh.reachable and not status.reachable and status.error:
                    fresh = replace(fresh, error=status.error)  # still no broker: keep the first explanation
                return fresh, local

            self._connector.submit(connect, lambda result: self.dispatch(lambda: self._connected(*result)))
            return

        def job() -> BackendStatus:
            try:
                services = probe(status.address)
            except (ClientError, ProtocolError) as e:
                error = f"lost the broker at {status.address} ({e}); retrying"
                return replace(status, error=error, reachable=False)
            return replace(status, services=services, error=None, reachable=True)

        self._connector.submit(job, lambda fresh: self.dispatch(lambda: self._refreshed(fresh)))

    def _on_local_event(self, local: LocalBackend, text: str, up: bool) -> None:
        """The embedded backend lost a process, restarts it, gave up, or serves again (GUI thread)."""
        if self._closed or local is not self.local:
            return
        if up:
            self.controller.notify("info", f"SAM2: {text}")
            if self.controller.session is None:
                self.connect_backend()
            else:
                self.refresh_status()
            return
        self.controller.unavailable = f"No SAM2 worker is running: {text}"
        self._set_connected(False)
        self._show_status(f"Not connected: {text}", ok=False)
        self.controller.events.record(DISCONNECT, detail=text)
        self.controller.notify("warning", f"SAM2: {text}")
        if not self._lost and self.controller.session is not None:
            self._lost = True
            self._timer.start(RETRY_INTERVAL_MS)
            self.controller.cancel_auto()  # long tasks end now, keeping what they wrote
            self.controller.stack.abandon()

    def _refreshed(self, status: BackendStatus) -> None:
        if self.controller.session is None or status.address != self.status.address or self._closed:
            return  # reconnected meanwhile
        problem = self.local.problem if self.local is not None else None
        if problem is not None:  # the embedded backend is down, restarting or gave up
            status = replace(status, error=problem)
        state = self.link.state
        if problem is None and not status.reachable and state is not None and state.connected:
            self._missed += 1
            if (
                self._missed < MISSES_BEFORE_LOST
            ):  # one slow answer (a busy machine) is not a loss: ask again now
                QTimer.singleShot(0, self.refresh_status)
                return
        self._missed = 0
        if status.connected and self._lost:
            self._answered += 1
            if self._answered < CHECKS_BEFORE_BACK:  # a worker re-registering may flap once: confirm
                return
        self._answered = 0
        if status.connected:
            self.controller.unavailable = None
        elif problem is not None:
            self.controller.unavailable = f"No SAM2 worker is running: {problem}"
        else:
            self.controller.unavailable = f"SAM2 cannot segment now: {status.describe()}"
        if not status.connected and not self._lost:
            self._lost = True
            self.controller.cancel_auto()  # long tasks end now, keeping what they wrote
            self.controller.stack.abandon()
        elif status.connected and self._lost:
            self._new_session(status)  # fresh sockets: requests in flight died with the old backend
        self._follow_link(status, quiet=problem is not None)  # the embedded backend spoke already

    def _follow_link(self, status: BackendStatus, quiet: bool = False) -> None:
        """Show a check's result (state, since when, what is retried); log and notify once per change."""
        self.status = status
        self._lost = not status.connected and self.controller.session is not None
        change = self.link.observe(status)
        if change is not None:
            kind = CONNECT if change.after.connected else DISCONNECT
            self.controller.events.record(kind, detail=f"{change.after.state}: {status.describe()}")
            message = None if quiet else change.notification()
            if message is not None:
                self.controller.notify(*message)
        self._timer.start(REFRESH_INTERVAL_MS if status.connected else RETRY_INTERVAL_MS)
        self._set_connected(status.connected)
        self._show_link()

    def _show_link(self) -> None:
        state = self.link.state
        if state is not None:
            self._show_status(state.line(RETRY_INTERVAL_MS / 1000.0), ok=state.connected)

    def _show_status(self, text: str, ok: bool) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet(_OK if ok else _BAD)
