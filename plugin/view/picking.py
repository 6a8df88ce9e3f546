"""Pick a label id by clicking a region (napari models only, no Qt)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.labels.pyramid import label_data

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels

PICK_HELP = "Click a region to pick its label (press Pick again to start over)."
"""Shown in napari's status bar while a pick waits for its click."""
PICK_CURSOR = "crosshair"
PICK_WAITING = "Click a region…"
"""The Pick button's text while it waits for the click."""


def label_at(layer: Labels, event: Any) -> int:
    """The label id under a mouse event in ``layer`` (0 outside or on the background).

    On a pyramid layer the id is read from level 0 at the event's data position
    (one pixel), not from the level on screen, whose pixels are for display.
    """
    if getattr(layer, "multiscale", False):
        return _level0_value(layer, event.position)
    value = layer.get_value(
        event.position,
        world=True,
        view_direction=getattr(event, "view_direction", None),
        dims_displayed=getattr(event, "dims_displayed", None),
    )
    if isinstance(value, tuple):  # multiscale: (level, value)
        value = value[-1]
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


def pick_once(
    viewer: napari.Viewer,
    layer: Labels,
    on_pick: Callable[[int], None],
    on_end: Callable[[], None] = lambda: None,
) -> Callable[[], None]:
    """Call ``on_pick(label_id)`` with the label under the next click in ``layer``.

    While it waits, ``layer`` is active in pan/zoom mode (the click edits
    nothing), the cursor is a crosshair and napari's status bar says to
    click. The click (or the returned cancel function) puts back the layer
    that was active, the layer's mode, cursor and the status bar help, then
    calls ``on_end()``.
    """
    previous, mode, cursor, help_text = viewer.layers.selection.active, layer.mode, layer.cursor, viewer.help

    def callback(_viewer: Any, event: Any) -> None:
        cancel()
        on_pick(label_at(layer, event))

    def cancel() -> None:
        if callback not in viewer.mouse_drag_callbacks:
            return
        viewer.mouse_drag_callbacks.remove(callback)
        layer.mode = mode
        layer.cursor = cursor
        if viewer.help == PICK_HELP:
            viewer.help = help_text
        if previous is not None and previous in viewer.layers:
            viewer.layers.selection.active = previous
        on_end()

    viewer.layers.selection.active = layer
    layer.mode = "pan_zoom"
    layer.cursor = PICK_CURSOR
    viewer.help = PICK_HELP
    viewer.mouse_drag_callbacks.append(callback)
    return cancel


def _level0_value(layer: Labels, world_position: Any) -> int:
    """The level-0 label id at a world position (0 outside the layer)."""
    point = np.round(np.asarray(layer.world_to_data(world_position), dtype=float)).astype(int)
    if point.shape != (layer.ndim,) or (point < 0).any() or (point >= np.asarray(layer.data.shape)).any():
        return 0
    return int(np.asarray(label_data(layer)[tuple(int(p) for p in point)]))
