"""Where AUTO-SEGMENT looks on a slice: the whole slice, the visible region, or a drawn rectangle (no Qt).

napari layer models only. :func:`region_rect` turns the user's choice
(:data:`REGIONS`) into ``[r0, c0, r1, c1)`` of the image's slice (level-0
pixels, (row, col)), read on the GUI thread when AUTO starts:

* ``whole``: None (the slice, as before);
* ``visible``: the part of the slice under the canvas now
  (:func:`plugin.view.edit_here.visible_rect`, no size limit);
* ``drawn``: the bounding box of the newest rectangle of the ``Bounding Box``
  layer (:func:`plugin.view.coords.box_in_plane`), rounded out to whole pixels.

A region is segmented as its own small slice (:class:`RegionView` reads the
image through it, so only tiles covering it are sent) and pasted back
through a :class:`RegionView` the other way, so nothing outside it is written.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.jobs.auto_settings import DRAWN, VISIBLE, WHOLE
from plugin.view.coords import OutsideImage, SlicePlane, box_in_plane
from plugin.view.edit_here import visible_rect
from plugin.view.layers import BOUNDING_BOX, find_layer, to_image_data

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

Box = tuple[int, int, int, int]
REGIONS = {
    WHOLE: "Whole slice",
    VISIBLE: "Visible region",
    DRAWN: "Drawn rectangle (Bounding Box layer)",
}
"""AUTO-SEGMENT's region choices: key -> what the box shows."""


def region_rect(viewer: napari.Viewer, image: Image, plane: SlicePlane, region: str) -> Box | None:
    """``[r0, c0, r1, c1)`` of ``plane`` (level-0 pixels, (row, col)) that AUTO segments; None: all of it.

    Raises:
        ValueError: an unknown ``region``, no rectangle drawn, or one that misses the image (the
            message says which; nothing is sent).
    """
    if region == WHOLE:
        return None
    if region == VISIBLE:
        return visible_rect(viewer, image, plane, max_side=max(plane.size))
    if region != DRAWN:
        raise ValueError(f"unknown AUTO-SEGMENT region {region!r}; choose one of {', '.join(REGIONS)}")
    from napari.layers import Shapes

    boxes = find_layer(viewer, BOUNDING_BOX, Shapes)
    if boxes is None or len(boxes.data) == 0:
        raise ValueError(f"draw a rectangle in the '{BOUNDING_BOX}' layer first (Box prompts)")
    corners = to_image_data(boxes, np.asarray(boxes.data[-1]), image)
    try:
        r0, c0, r1, c1 = box_in_plane(corners, plane)
    except OutsideImage as e:
        raise ValueError(f"the drawn rectangle: {e}") from e
    return math.floor(r0), math.floor(c0), math.ceil(r1), math.ceil(c1)


class RegionView:
    """A (rows, cols[, C]) window of a 2D array-like, indexed in the window's own pixels.

    ``RegionView(source, origin, shape)[r0:r1, c0:c1]`` reads
    ``source[origin_r + r0 : origin_r + r1, origin_c + c0 : origin_c + c1]``
    (basic slices with start and stop; a negative origin maps a slice's
    pixels into a region's array). Only what is indexed is read.

    Attributes:
        shape: (rows, cols) plus the source's trailing axes (colour).
        dtype: the source's dtype.
    """

    def __init__(self, source: Any, origin: tuple[int, int], shape: tuple[int, int]) -> None:
        self.source, self.origin = source, (int(origin[0]), int(origin[1]))
        self.shape: tuple[int, ...] = (int(shape[0]), int(shape[1]), *tuple(source.shape[2:]))
        self.dtype = np.dtype(source.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        shifted = []
        for axis, part in enumerate(key[:2]):
            start, stop, _ = part.indices(self.shape[axis])
            shifted.append(slice(start + self.origin[axis], stop + self.origin[axis]))
        return np.asarray(self.source[(*shifted, *key[2:])])
