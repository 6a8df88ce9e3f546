"""The backend events panel: the last events (connections, errors, request timings), newest first.

Thin and read-only: the events are kept by :class:`plugin.events_log.EventLog`
(recorded from any thread); this table redraws on the GUI thread, at most
every few tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from plugin._qt.qt_helpers import Coalescer
from plugin.events_log import DISCONNECT, ERROR, BackendEvent, EventLog

COLUMNS = ("time", "kind", "op", "request", "ms", "detail")
_ALERT = QColor("#e55")


class EventsPanel(QWidget):
    """A read-only table of :class:`plugin.events_log.EventLog`'s events.

    Args:
        log: the events.
        dispatch: runs a function on the GUI thread (events come from request threads).
    """

    def __init__(
        self, log: EventLog, dispatch: Callable[[Callable[[], None]], None], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.log = log
        self._dispatch = dispatch
        self._schedule = Coalescer(50, self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        rows_header, header = self.table.verticalHeader(), self.table.horizontalHeader()
        assert rows_header is not None and header is not None
        rows_header.setVisible(False)
        for column in range(len(COLUMNS) - 1):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        layout.addWidget(self.table)
        log.listeners.append(self._on_event)
        self.refresh()

    def _on_event(self, _event: BackendEvent) -> None:
        self._dispatch(lambda: self._schedule(self.refresh))

    def rows(self) -> list[tuple[str, ...]]:
        """The cells shown, newest first (for tests)."""
        return [
            tuple(self.table.item(r, c).text() for c in range(len(COLUMNS)))  # type: ignore[union-attr]
            for r in range(self.table.rowCount())
        ]

    def refresh(self) -> None:
        events = self.log.recent()
        self.table.setRowCount(len(events))
        for r, event in enumerate(events):
            for c, text in enumerate(event.row()):
                item = QTableWidgetItem(text)
                if c == len(COLUMNS) - 1:
                    item.setToolTip(text)
                if event.kind in (ERROR, DISCONNECT):
                    item.setForeground(_ALERT)
                self.table.setItem(r, c, item)

    def shutdown(self) -> None:
        if self._on_event in self.log.listeners:
            self.log.listeners.remove(self._on_event)
