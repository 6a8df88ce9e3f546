"""The label list as a Qt table model: the view asks only for the rows it shows.

:class:`LabelModel` holds the list as two numpy columns (ids ascending,
pixel counts; :meth:`plugin.labels.watch.LabelWatcher.columns`) and the
names; a ``QTableView`` asks ``data()`` for the visible cells only, so a
layer with 300,000 labels costs a reset and a few dozen cells per redraw,
never one widget or one colour lookup per label. Colours come from the
layer's colormap on first display of a row and are kept until the list is
reset for another layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtGui import QColor

COLUMNS = ("", "id", "name", "pixels")
COLOUR, ID, NAME, PIXELS = range(4)
_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
_RIGHT_VALUE = int(getattr(_RIGHT, "value", _RIGHT))  # PyQt6 enums are not ints


class LabelModel(QAbstractTableModel):
    """Rows of (colour, id, name, pixels) over numpy columns.

    Args:
        colour_of: ``colour_of(label_id)`` -> (r, g, b[, a]) floats in 0..1 (the layer's colormap).
        on_rename: ``on_rename(label_id, name)`` when a name cell is edited.
    """

    def __init__(
        self, colour_of: Callable[[int], Any], on_rename: Callable[[int, str], None], parent: Any = None
    ) -> None:
        super().__init__(parent)
        self.colour_of = colour_of
        self.on_rename = on_rename
        self.ids = np.zeros(0, np.int64)
        self.pixels = np.zeros(0, np.int64)
        self.names: Mapping[int, str] = {}
        self._colours: dict[int, QColor] = {}

    def set_rows(
        self, ids: np.ndarray, pixels: np.ndarray, names: Mapping[int, str], new_layer: bool = False
    ) -> None:
        """Replace the rows (one model reset); ``new_layer`` forgets the colours kept."""
        self.beginResetModel()
        self.ids, self.pixels, self.names = ids, pixels, names
        if new_layer:
            self._colours.clear()
        self.endResetModel()

    def cell(self, row: int, column: int, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """What the view shows in a cell (as it would ask for it)."""
        return self.data(self.index(row, column), role)

    def row_of(self, label_id: int) -> int | None:
        """The row showing ``label_id`` (None when it is not in the list)."""
        row = int(np.searchsorted(self.ids, label_id))
        return row if row < len(self.ids) and int(self.ids[row]) == label_id else None

    # -- QAbstractTableModel -------------------------------------------------------------------

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 (Qt's names)
        return 0 if parent.isValid() else len(self.ids)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def flags(self, index: QModelIndex) -> Qt.ItemFlag:
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        return flags | Qt.ItemFlag.ItemIsEditable if index.column() == NAME else flags

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        row, column = index.row(), index.column()
        if not index.isValid() or row >= len(self.ids):
            return None
        label_id = int(self.ids[row])
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            if column == ID:
                return str(label_id)
            if column == NAME:
                return self.names.get(label_id, "")
            if column == PIXELS:
                return f"{int(self.pixels[row]):,}"
            return ""
        if role == Qt.ItemDataRole.DecorationRole and column == COLOUR:
            return self._colour(label_id)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (ID, PIXELS):
            return _RIGHT_VALUE
        return None

    def setData(self, index: QModelIndex, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if not index.isValid() or index.column() != NAME or role != Qt.ItemDataRole.EditRole:
            return False
        self.on_rename(int(self.ids[index.row()]), str(value))
        self.dataChanged.emit(index, index)
        return True

    def _colour(self, label_id: int) -> QColor:
        colour = self._colours.get(label_id)
        if colour is None:
            colour = QColor.fromRgbF(*[float(c) for c in self.colour_of(label_id)[:3]])
            self._colours[label_id] = colour
        return colour
