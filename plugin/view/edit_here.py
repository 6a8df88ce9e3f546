""" "Edit here": napari's brush, fill and eraser on a screen-sized window of a labels layer (no Qt).

napari cannot paint a multiscale Labels layer (it sets ``editable = False``;
``paint()`` and ``fill()`` raise), and painting a 20,000² single-scale one
redraws seconds per stroke. :func:`open_edit_window` copies the window of
level 0 under the view (at most :data:`EDIT_MAX_SIDE` per side, the slice
shown now) into an ordinary Labels layer placed exactly over it, with the
source's colours, in paint mode. :func:`close_edit_window` writes back the
pixels the user changed there (compared with the copy, so answers that
arrived meanwhile elsewhere in the window are kept) as **one** undo step of
the source layer, through the plugin's write path
(:func:`plugin.view.layers.write_edit`), and removes the window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.labels.history import run_here
from plugin.labels.ops import Box, SliceEdit
from plugin.labels.pyramid import label_data
from plugin.view.coords import SlicePlane
from plugin.view.image_slice import LazyPlane
from plugin.view.layers import defer_tool_overlays, plane_of, view_camera, write_edit

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels

EDIT_MAX_SIDE = 4096
"""Largest side of an "Edit here" window, in level-0 pixels."""
EDIT_SUFFIX = " (edit here)"
EDIT_MARK = "sam2_edit_here"
"""Metadata key set on an "Edit here" layer (the label list keeps showing the layer it edits)."""


def is_edit_window(layer: object) -> bool:
    """Whether ``layer`` is an "Edit here" window."""
    return bool(getattr(layer, "metadata", {}).get(EDIT_MARK))


@dataclass
class EditWindow:
    """An open "Edit here" window.

    Attributes:
        source: the labels layer edited.
        plane: its slice shown when the window was opened.
        rect: ``[r0, c0, r1, c1)`` of the window on that slice (level-0 pixels, (row, col)).
        layer: the ordinary Labels layer the user paints (its data: the window, nD with size 1 off the plane).
        original: (H, W) the window's ids when it was opened.
    """

    source: Labels
    plane: SlicePlane
    rect: Box
    layer: Labels
    original: np.ndarray


def visible_rect(
    viewer: napari.Viewer, layer: Labels, plane: SlicePlane, max_side: int = EDIT_MAX_SIDE
) -> Box:
    """``[r0, c0, r1, c1)`` of ``plane`` under the view's centre: screen-sized, ``max_side`` at most."""
    camera = view_camera(viewer)
    centre = list(viewer.dims.point)
    for axis, value in zip(viewer.dims.displayed, camera.center[-len(viewer.dims.displayed) :], strict=True):
        centre[axis] = value
    data_centre = np.asarray(layer.world_to_data(centre), dtype=float)
    canvas = np.asarray(getattr(viewer, "_canvas_size", (1024, 1024)), dtype=float)[-2:]
    scale = np.abs(np.asarray(layer.scale, dtype=float)[[plane.row_axis, plane.col_axis]])
    extent = canvas / max(float(camera.zoom), 1e-9) / np.maximum(scale, 1e-12)
    box = []
    for centre_px, side, limit in zip(
        data_centre[[plane.row_axis, plane.col_axis]], extent, plane.size, strict=True
    ):
        side = int(min(max(np.ceil(side), 1), max_side, limit))
        start = int(np.clip(round(centre_px - side / 2), 0, limit - side))
        box.append((start, start + side))
    (r0, r1), (c0, c1) = box
    return r0, c0, r1, c1


def open_edit_window(
    viewer: napari.Viewer,
    source: Labels,
    rect: Box | None = None,
    later: Callable[[Callable[[], None]], None] = run_here,
) -> EditWindow:
    """Open the window ``rect`` (default: under the view, :func:`visible_rect`) of ``source`` for painting.

    ``later`` runs the switch to napari's brush (the widget's: on the next event-loop turn, so
    the window's layer and the brush's visuals are not made in one stall).

    Raises:
        ValueError: the view is 3D, or the layer is rotated or sheared (the window could not sit on it).
    """
    from napari.layers import Labels

    if not np.allclose(np.asarray(source.rotate), np.eye(source.ndim)) or np.any(np.asarray(source.shear)):
        raise ValueError("Edit here works on labels layers without rotation or shear")
    plane = plane_of(viewer, source, tuple(source.data.shape))
    rect = visible_rect(viewer, source, plane) if rect is None else rect
    r0, c0, r1, c1 = rect
    original = np.asarray(LazyPlane(label_data(source), plane)[r0:r1, c0:c1])
    offset = [float(i or 0) for i in plane.index]
    offset[plane.row_axis], offset[plane.col_axis] = float(r0), float(c0)
    shape = [1] * source.ndim
    shape[plane.row_axis], shape[plane.col_axis] = r1 - r0, c1 - c0
    layer = Labels(
        original.reshape(shape).copy(),
        name=f"{source.name}{EDIT_SUFFIX}",
        scale=source.scale,
        translate=np.asarray(source.translate, dtype=float) + np.asarray(source.scale, dtype=float) * offset,
        affine=source.affine,
        colormap=source.colormap,
        opacity=max(float(source.opacity), 0.7),
        units=source.units,
        metadata={EDIT_MARK: True},
    )
    layer.selected_label = source.selected_label
    defer_tool_overlays(layer)
    viewer.add_layer(layer)
    viewer.layers.selection.active = layer

    def paint() -> None:
        if layer in viewer.layers and str(layer.mode) == "pan_zoom":  # the user picked no tool meanwhile
            layer.mode = "paint"

    later(paint)
    return EditWindow(source, plane, (r0, c0, r1, c1), layer, original)


def close_edit_window(
    viewer: napari.Viewer,
    window: EditWindow,
    write_back: bool = True,
    off_gui: Callable[[Callable[[], Any]], Any] = run_here,
) -> int:
    """Write back what the user changed in the window (one undo step of the source) and remove it.

    ``off_gui`` runs a pyramid's store write (the widget's: in a thread, the window drawing).

    Returns:
        The pixels written (0 when nothing changed, or ``write_back`` is False).
    """
    painted = np.asarray(window.layer.data).reshape(window.original.shape)
    if window.layer in viewer.layers:
        viewer.layers.remove(window.layer)
    if window.source in viewer.layers:
        viewer.layers.selection.active = window.source
    if not write_back or window.source not in viewer.layers:
        return 0
    rows, cols = np.nonzero(painted != window.original)
    if rows.size == 0:
        return 0
    r0, c0 = window.rect[:2]
    new = painted[rows, cols].astype(window.source.data.dtype)
    window.source.selected_label = int(window.layer.selected_label)  # ids painted there count as used
    write_edit(
        window.source,
        window.plane,
        SliceEdit(rows + r0, cols + c0, window.original[rows, cols], new),
        off_gui=off_gui,
    )
    return int(rows.size)
