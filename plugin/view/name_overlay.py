"""Label names drawn over their regions on the current slice.

napari's Labels layer cannot draw text, so each named labels layer gets a
companion Points layer ``"<labels> names"``: one invisible point per named
region of the *current* slice, at the region's anchor
(:func:`plugin.labels.names.label_anchors`), with the name as its text. It
is rebuilt when the labels, the names or the slice change. No Qt here; the
caller passes ``schedule`` to coalesce bursts of updates (painting).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.labels.names import features_table, label_anchors, names_from_metadata
from plugin.labels.pyramid import label_data
from plugin.view.coords import OutsideImage, SlicePlane
from plugin.view.image_slice import LazyPlane
from plugin.view.layers import plane_of

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels, Points

TEXT_COLOUR = "white"
TEXT_SIZE = 12
ANCHOR_SCAN = 2048
"""Most pixels per side read to place names: a larger slice is read where it is in view, strided."""


def bounded_anchors(
    labels: Any, ids: list[int], view: tuple[int, int, int, int] | None, scan: int = ANCHOR_SCAN
) -> dict[int, tuple[float, float]]:
    """:func:`plugin.labels.names.label_anchors` of an (H, W) slice, reading at most ``scan``² pixels.

    A slice no larger than ``scan`` on either side is read whole (exact
    anchors). A larger one is read only within ``view`` ([r0, c0, r1, c1),
    the part on screen; None: all of it), every ``step``-th pixel, so an
    answer on a 20,000² slice costs no more than on a 2,048² one; regions
    thinner than ``step`` pixels at that zoom may get no name until you zoom in.
    """
    height, width = int(labels.shape[0]), int(labels.shape[1])
    if max(height, width) <= scan:
        return label_anchors(np.asarray(labels[:, :]), ids)
    r0, c0, r1, c1 = view if view is not None else (0, 0, height, width)
    r0, c0 = max(0, min(r0, height - 1)), max(0, min(c0, width - 1))
    r1, c1 = max(r0 + 1, min(r1, height)), max(c0 + 1, min(c1, width))
    step = max(1, -(-max(r1 - r0, c1 - c0) // scan))
    found = label_anchors(np.asarray(labels[r0:r1:step, c0:c1:step]), ids)
    return {k: (r0 + row * step, c0 + col * step) for k, (row, col) in found.items()}


def anchor_points(plane: SlicePlane, anchors: dict[int, tuple[float, float]]) -> np.ndarray:
    """(N, ndim) data coordinates of slice anchors ``{id: (row, col)}`` (napari pixel indices)."""
    out = np.zeros((len(anchors), plane.ndim))
    for k, (row, col) in enumerate(anchors.values()):
        for axis, fixed in enumerate(plane.index):
            out[k, axis] = row if axis == plane.row_axis else col if axis == plane.col_axis else fixed
    return out


class NameOverlay:
    """Keeps the names layer of one labels layer in step with it.

    Args:
        viewer: the viewer.
        labels: the labels layer whose names are drawn.
        schedule: ``schedule(fn)`` runs ``fn`` soon (e.g. a short Qt timer);
            several requests before it runs cause one update. Default: now.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        labels: Labels,
        schedule: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.viewer = viewer
        self.labels = labels
        self._schedule = schedule or (lambda fn: fn())
        self._pending = False
        self.points: Points | None = None
        for emitter in (labels.events.labels_update, labels.events.data, labels.events.metadata):
            emitter.connect(self.request_update)
        labels.events.name.connect(self._rename)
        viewer.dims.events.current_step.connect(self.request_update)
        viewer.dims.events.order.connect(self.request_update)
        self.update()

    @property
    def name(self) -> str:
        return f"{self.labels.name} names"

    def request_update(self, _event: Any = None) -> None:
        if not self._pending:
            self._pending = True
            self._schedule(self.update)

    def disconnect(self) -> None:
        """Stop following the labels layer and remove the names layer."""
        for emitter in (
            self.labels.events.labels_update,
            self.labels.events.data,
            self.labels.events.metadata,
        ):
            emitter.disconnect(self.request_update)
        self.labels.events.name.disconnect(self._rename)
        self.viewer.dims.events.current_step.disconnect(self.request_update)
        self.viewer.dims.events.order.disconnect(self.request_update)
        if self.points is not None and self.points in self.viewer.layers:
            self.viewer.layers.remove(self.points)
        self.points = None

    def _rename(self, _event: Any = None) -> None:
        if self.points is not None:
            self.points.name = self.name

    def anchors(self) -> tuple[SlicePlane | None, dict[int, tuple[float, float]], dict[int, str]]:
        """The current slice, the anchors of its named regions and all names."""
        names = names_from_metadata(self.labels.metadata)
        if not names or self.labels not in self.viewer.layers:
            return None, {}, names
        try:
            plane = plane_of(self.viewer, self.labels, tuple(self.labels.data.shape))
        except (ValueError, OutsideImage):
            return None, {}, names
        labels = LazyPlane(label_data(self.labels), plane)
        return plane, bounded_anchors(labels, list(names), self._view(plane)), names

    def _view(self, plane: SlicePlane) -> tuple[int, int, int, int] | None:
        """[r0, c0, r1, c1) of the slice on screen (napari's ``corner_pixels``), or None if unknown."""
        try:
            corners = np.asarray(self.labels.corner_pixels, dtype=np.int64)
            rows, cols = corners[:, plane.row_axis], corners[:, plane.col_axis]
        except (AttributeError, IndexError, ValueError):
            return None
        if rows[1] <= rows[0] or cols[1] <= cols[0]:
            return None
        return int(rows[0]), int(cols[0]), int(rows[1]) + 1, int(cols[1]) + 1

    def update(self) -> None:
        """Rebuild the names layer for the current slice."""
        self._pending = False
        plane, anchors, names = self.anchors()
        self._sync_features(names)
        if plane is None or not anchors:
            if self.points is not None:
                self.points.data = np.empty((0, self.labels.ndim))
            return
        data = anchor_points(plane, anchors)
        text = [names[i] for i in anchors]
        points = self._ensure_points()
        points.data = data
        points.features = {"name": text, "label_id": np.asarray(list(anchors), dtype=float)}
        points.text = {"string": "{name}", "color": TEXT_COLOUR, "size": TEXT_SIZE, "anchor": "center"}
        points.refresh()

    def _sync_features(self, names: dict[int, str]) -> None:
        table = features_table(names)
        current = self.labels.features
        if list(current.get("index", [])) != table["index"] or list(current.get("name", [])) != table["name"]:
            self.labels.features = table

    def _ensure_points(self) -> Points:
        if self.points is not None and self.points in self.viewer.layers:
            return self.points
        from napari.layers import Points

        from plugin.view.layers import transform_of

        self.points = Points(
            np.empty((0, self.labels.ndim)),
            ndim=self.labels.ndim,
            name=self.name,
            size=1,
            face_color="transparent",
            border_color="transparent",
            out_of_slice_display=False,
            **transform_of(self.labels),
        )
        active = self.viewer.layers.selection.active
        self.viewer.add_layer(self.points)
        self.viewer.layers.selection.active = active  # adding a layer selects it; keep the user's choice
        return self.points
