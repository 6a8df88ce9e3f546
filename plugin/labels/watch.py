"""Keep the label list of one labels layer current (napari layer models, no Qt).

:class:`LabelWatcher` counts the layer once (:func:`plugin.labels.stats.pixel_counts`),
then follows it by changes only: each new history step (``events.paint``:
answers, deletes, merges, brush strokes, fills) and each undo or redo
(:class:`plugin.labels.history.Histories` listeners) updates the counts from the
changed pixels. Replacing the whole array (``events.data``) or
:meth:`LabelWatcher.recount` counts again. ``on_change`` is called after each
update; the widget coalesces its redraws.

A full count is O(layer), so with ``off_gui`` (the widget passes
:func:`plugin._qt.off_thread.run_keeping_window_alive`) it reads a snapshot
(:func:`plugin.labels.pyramid.label_snapshot`, taken on the GUI thread) in a
thread while the window keeps drawing; changes that arrive meanwhile are
held and applied on top of the count, so none is lost or counted twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.labels.history import Histories, atom_changes
from plugin.labels.names import names_from_metadata
from plugin.labels.pyramid import label_data, label_snapshot
from plugin.labels.stats import (
    LabelCounts,
    LabelRow,
    boxes_voxels,
    count_boxes,
    label_columns,
    label_rows,
    pixel_counts,
)

if TYPE_CHECKING:
    from napari.layers import Labels

OFF_GUI_MIN_PIXELS = 1 << 22
"""A layer with fewer (level-0) pixels, or a pyramid whose store holds fewer, is counted on the calling
thread (ms: no thread, no nested event loop; a new result layer holds none)."""


class LabelWatcher:
    """The counts and names of one labels layer, updated as it changes.

    Args:
        histories: the controller's histories (for undo/redo notifications).
        on_change: called (no arguments) after the counts or names changed.
        off_gui: runs a full count (``off_gui(work)`` returns ``work()``; the GUI thread
            keeps processing events meanwhile); None counts on the calling thread.
    """

    def __init__(
        self,
        histories: Histories,
        on_change: Callable[[], None],
        off_gui: Callable[[Callable[[], dict[int, int]]], dict[int, int]] | None = None,
    ) -> None:
        self.histories = histories
        self.on_change = on_change
        self.off_gui = off_gui
        self.layer: Labels | None = None
        self.counts = LabelCounts()
        self.recounts = 0
        self._held: list[tuple[np.ndarray, np.ndarray]] | None = None
        """Changes that arrived during a full count in a thread (None: no count running)."""
        self._again = False
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
        """Count every label of the layer again (a full pass over a snapshot of its data, see ``off_gui``)."""
        if self._held is not None:  # asked again while counting (the window stayed alive): once more after
            self._again = True
            return
        self.recounts += 1
        layer = self.layer
        if layer is None:
            self.counts = LabelCounts()
            self.on_change()
            return
        if self.off_gui is None or int(np.prod(layer.data.shape, dtype=np.int64)) < OFF_GUI_MIN_PIXELS:
            self.counts = LabelCounts(pixel_counts(label_data(layer)))
            self.on_change()
            return
        snapshot = label_snapshot(layer)
        boxes = count_boxes(snapshot)  # a pyramid's store: only the chunks written (none on a new layer)
        if boxes_voxels(boxes) < OFF_GUI_MIN_PIXELS:
            self.counts = LabelCounts(pixel_counts(snapshot, boxes=boxes))
            self.on_change()
            return
        self._held = []
        try:
            counted = self.off_gui(lambda: pixel_counts(snapshot, boxes=boxes))
        finally:
            held, self._held = self._held, None
        if layer is self.layer:  # else the user chose another layer meanwhile (its count is asked again)
            self.counts = LabelCounts(counted)
            self._apply(held)
        if self._again:
            self._again = False
            self.recount()

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
        if self._held is not None:  # a full count runs: applied on top of it when it is done
            self._held.extend(changes)
            return
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
