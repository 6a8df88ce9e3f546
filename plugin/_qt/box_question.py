"""The question before a large box is sent: full resolution in tiles, one downsampled request, or cancel.

Thin: :class:`plugin.jobs.box_tiles.BoxTiles` decides what each answer does;
:func:`protocol.ops.tiled_box.BoxView.notice` says what the user is told.
"""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QMessageBox, QWidget

from plugin.jobs.box_tiles import FULL, ONE, BoxTiles
from protocol.ops.tiled_box import BoxView


def ask_box_resolution(parent: QWidget, view: BoxView, box_tiles: BoxTiles) -> str | None:
    """Ask how to segment a box one request would see at 1/``view.factor`` (full resolution by default);
    "Do not ask again" keeps the answer for the session."""
    box = QMessageBox(QMessageBox.Icon.Question, "Large box", view.notice(), parent=parent)
    full = box.addButton(f"Full resolution ({view.tiles} tiles)", QMessageBox.ButtonRole.AcceptRole)
    one = box.addButton(f"One request (1/{view.factor})", QMessageBox.ButtonRole.RejectRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(full)
    keep = QCheckBox("Do not ask again in this session")
    box.setCheckBox(keep)
    box.exec()
    clicked = box.clickedButton()
    choice = FULL if clicked is full else ONE if clicked is one else None
    if choice is not None and keep.isChecked():
        box_tiles.remembered = choice
    return choice
