"""Keep the label list of one labels layer current (napari layer models, no Qt).

:class:`LabelWatcher` counts the layer once (:func:`plugin.labels.stats.pixel_counts`),
then follows it by changes only: each new history step (``events.paint``:
answers, deletes, merges, brush strokes, fills) and each undo or redo
(:class:`plugin.labels.history.Histories` listeners) updates the counts from the
changed pixels. Replacing the whole array (``events.data``) or
:meth:`LabelWatcher.recount` counts again. ``on_change`` is called after each
update; the widget coalesces its redraws.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.labels.history import Histories, atom_changes
from plugin.labels.names import names_from_metadata
from plugin.labels.pyramid import label_data
from plugin.labels.stats import LabelCounts, LabelRow, label_columns, label_rows, pixel_counts

if TYPE_CHECKING:
    from napari.layers import Labels


class LabelWatcher:
    """The counts and names of one labels layer, updated as it changes.

    Args:
        histories: the controller's histories (for undo/redo notifications).
        on_change: called (no arguments) after the counts or names changed.
    """

    def __init__(self, histories: Histories, on_change: Callable[[], None]) -> None:
        self.histories = histories
        self.on_change = on_change
        self.layer: Labels | None = None
        self.counts = LabelCounts()
        self.recounts = 0
        histories.listeners.append(self._on_history)

    def watch(self, layer: Labels | None) -> None:
        """Follow ``layer`` (None: nothing); counts it once."""
        if layer is self.layer:
            return
        self._disconnect()
        self.layer = layer
        if layer is not None:
            self.histories(layer)  # undo keys on the layer go through plugin.labels.history
            layer.events.paint.connect(self._on_paint)
            layer.events.data.connect(self._on_data)
            layer.events.metadata.connect(self._on_metadata)
        self.recount()

    def _disconnect(self) -> None:
        if self.layer is None:
            return
        for emitter, callback in (
            (self.layer.events.paint, self._on_paint),
            (self.layer.events.data, self._on_data),
            (self.layer.events.metadata, self._on_metadata),
        ):
            emitter.disconnect(callback)

    def close(self) -> None:
        self._disconnect()
        self.layer = None
        if self._on_history in self.histories.listeners:
            self.histories.listeners.remove(self._on_history)

    def recount(self) -> None:
        """Count every label of the layer again (a full pass over its data)."""
        self.recounts += 1
        self.counts = LabelCounts(pixel_counts(label_data(self.layer)) if self.layer is not None else {})
        self.on_change()

    def rows(self) -> list[LabelRow]:
        """Every label present or named: id, name, pixels."""
        if self.layer is None:
            return []
        return label_rows(self.counts.as_dict(), names_from_metadata(self.layer.metadata))

    def columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Every label present or named as (N,) ids ascending and (N,) pixels (no object per row)."""
        if self.layer is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return label_columns(self.counts.raw(), names_from_metadata(self.layer.metadata))

    def _apply(self, changes: list[tuple[np.ndarray, np.ndarray]]) -> None:
        for old, new in changes:
            self.counts.apply(old, new)
        self.on_change()

    def _on_paint(self, event: Any) -> None:
        self._apply(atom_changes(list(event.value), undoing=False))

    def _on_history(self, layer: Labels, changes: list[tuple[np.ndarray, np.ndarray]]) -> None:
        if self.layer is not None and layer.unique_id == self.layer.unique_id:
            self._apply(changes)

    def _on_data(self, _event: Any) -> None:
        self.recount()

    def _on_metadata(self, _event: Any) -> None:
        self.on_change()
