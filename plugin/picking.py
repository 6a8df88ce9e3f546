"""Pick a label id by clicking a region (napari models only, no Qt)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels


def label_at(layer: Labels, event: Any) -> int:
    """The label id under a mouse event in ``layer`` (0 outside or on the background)."""
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


def pick_once(viewer: napari.Viewer, layer: Labels, on_pick: Callable[[int], None]) -> Callable[[], None]:
    """Call ``on_pick(label_id)`` with the label under the next click in ``layer``.

    The layer is made active in pan/zoom mode first, so the click edits
    nothing. Returns a function that cancels the pick.
    """

    def callback(_viewer: Any, event: Any) -> None:
        cancel()
        on_pick(label_at(layer, event))

    def cancel() -> None:
        if callback in viewer.mouse_drag_callbacks:
            viewer.mouse_drag_callbacks.remove(callback)

    viewer.layers.selection.active = layer
    layer.mode = "pan_zoom"
    viewer.mouse_drag_callbacks.append(callback)
    return cancel
