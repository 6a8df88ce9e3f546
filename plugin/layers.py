"""The plugin's napari layers: prompt layers, result layers, slice access.

Uses napari's layer *models* only (no Qt). Layers made here share the
image's world transform (scale, translate, rotate, shear, affine), so their
data coordinates are the image's; clicks are still mapped through
``data_to_world`` / ``world_to_data`` so any layer transform works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from plugin.coords import SlicePlane, layer_displayed_axes, plane_at
from plugin.label_names import METADATA_KEY
from plugin.label_ops import SliceEdit
from plugin.prompts import NEGATIVE, POSITIVE

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels, Layer, Points, Shapes

PROMPT_POINTS = "Prompt Points"
BOUNDING_BOX = "Bounding Box"
POINTS_MASK = "Points_mask"
BOX_MASK = "Box_mask"
AUTO_MASK = "AutoSeg_mask"
POSITIVE_COLOUR = "#00ff00"
NEGATIVE_COLOUR = "#ff00ff"
POLARITY = "polarity"
"""Feature of prompt points: ``"positive"`` or ``"negative"`` (drives their colour)."""
POLARITY_NAMES = {POSITIVE: "positive", NEGATIVE: "negative"}


def spatial_shape(image: Image) -> tuple[int, ...]:
    """The image's shape without the RGB(A) channel axis (level 0 of a multiscale image)."""
    data = image.data[0] if image.multiscale else image.data
    shape = tuple(int(s) for s in data.shape)
    return shape[:-1] if image.rgb else shape


def base_data(image: Image) -> Any:
    """The full-resolution array of an image layer."""
    return image.data[0] if image.multiscale else image.data


def transform_of(layer: Layer) -> dict[str, Any]:
    """Keyword arguments that give a new layer ``layer``'s world transform."""
    return {
        "scale": layer.scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine,
    }


def displayed_axes(viewer: napari.Viewer, layer: Layer) -> tuple[int, int]:
    """The layer's (row_axis, col_axis) in the current view; ValueError in 3D view."""
    if viewer.dims.ndisplay != 2:
        raise ValueError("segmentation works in the 2D view; switch napari to 2D")
    return layer_displayed_axes(viewer.dims.displayed, viewer.dims.ndim, layer.ndim)


def plane_of(viewer: napari.Viewer, layer: Layer, shape: tuple[int, ...]) -> SlicePlane:
    """The slice of ``layer`` shown now (``shape``: its spatial shape)."""
    point = layer.world_to_data(viewer.dims.point)
    return plane_at(point, shape, displayed_axes(viewer, layer))


def to_image_data(source: Layer, points: np.ndarray, image: Image) -> np.ndarray:
    """(N, ndim) data coordinates of ``source`` -> (N, image.ndim) data coordinates of ``image``."""
    points = np.atleast_2d(np.asarray(points, dtype=float))
    out = [image.world_to_data(source.data_to_world(p)) for p in points]
    return np.asarray(out, dtype=float).reshape(len(out), image.ndim)


def find_layer(viewer: napari.Viewer, name: str, kind: type) -> Any:
    layer = viewer.layers[name] if name in viewer.layers else None
    return layer if isinstance(layer, kind) else None


def fits_image(layer: Layer, image: Image) -> bool:
    """Whether ``layer`` has ``image``'s dimensions and world transform.

    A prompt layer that fits draws its points at the image's scale and maps
    them onto the image's pixels; one made for another image does not.
    """
    if layer.ndim != image.ndim:
        return False
    same = all(
        np.allclose(
            np.asarray(getattr(layer, name), dtype=float), np.asarray(getattr(image, name), dtype=float)
        )
        for name in ("scale", "translate", "rotate", "shear")
    )
    return same and bool(np.allclose(layer.affine.affine_matrix, image.affine.affine_matrix))


def _prompt_layer(viewer: napari.Viewer, name: str, kind: type, image: Image) -> Any:
    """The prompt layer ``name`` of type ``kind`` if it fits ``image`` (:func:`fits_image`), else None.

    One made for another image (other dimensions or transform) is removed,
    so that a new one can take its name.
    """
    layer = find_layer(viewer, name, kind)
    if layer is not None and not fits_image(layer, image):
        viewer.layers.remove(layer)
        return None
    return layer


def ensure_labels(viewer: napari.Viewer, image: Image, name: str) -> Labels:
    """The result layer ``name`` for ``image`` (same spatial shape and transform), created if needed.

    A layer called ``name`` of another shape (made for another image) is left
    alone; the result then goes to ``"name (image name)"``.
    """
    from napari.layers import Labels

    shape = spatial_shape(image)
    for candidate in (name, f"{name} ({image.name})"):
        layer = find_layer(viewer, candidate, Labels)
        if layer is not None and tuple(layer.data.shape) == shape:
            return layer
        if candidate not in viewer.layers:
            break
    labels = Labels(
        np.zeros(shape, dtype=np.uint32),
        name=candidate,
        metadata={METADATA_KEY: {}},
        opacity=0.6,
        **transform_of(image),
    )
    active = viewer.layers.selection.active
    viewer.add_layer(labels)
    viewer.layers.selection.active = active  # the user keeps clicking prompts, not painting labels
    return labels


def ensure_points(viewer: napari.Viewer, image: Image) -> tuple[Points, bool]:
    """The ``Prompt Points`` layer (created when missing); returns (layer, created)."""
    from napari.layers import Points

    layer = _prompt_layer(viewer, PROMPT_POINTS, Points, image)
    if layer is not None:
        return layer, False
    height, width = spatial_shape(image)[-2:]
    features = pd.DataFrame({POLARITY: pd.Categorical([], categories=["negative", "positive"])})
    layer = Points(
        np.empty((0, image.ndim)),
        ndim=image.ndim,
        name=PROMPT_POINTS,
        features=features,
        face_color=POLARITY,
        face_color_cycle=[NEGATIVE_COLOUR, POSITIVE_COLOUR],
        border_color="white",
        size=max(4.0, 0.015 * max(height, width)),
        out_of_slice_display=False,
        **transform_of(image),
    )
    layer.feature_defaults[POLARITY] = POLARITY_NAMES[POSITIVE]
    viewer.add_layer(layer)
    return layer, True


def ensure_box(viewer: napari.Viewer, image: Image) -> tuple[Shapes, bool]:
    """The ``Bounding Box`` layer (created when missing); returns (layer, created)."""
    from napari.layers import Shapes

    layer = _prompt_layer(viewer, BOUNDING_BOX, Shapes, image)
    if layer is not None:
        return layer, False
    height, width = spatial_shape(image)[-2:]
    layer = Shapes(
        ndim=image.ndim,
        name=BOUNDING_BOX,
        edge_color="yellow",
        face_color="transparent",
        edge_width=max(1.0, 0.004 * max(height, width)),
        **transform_of(image),
    )
    viewer.add_layer(layer)
    return layer, True


def point_labels(layer: Points) -> list[int]:
    """1 / 0 per point of a prompt layer (missing feature: positive)."""
    if POLARITY not in layer.features:
        return [POSITIVE] * len(layer.data)
    return [NEGATIVE if v == POLARITY_NAMES[NEGATIVE] else POSITIVE for v in layer.features[POLARITY]]


def slice_view(layer: Labels, plane: SlicePlane) -> np.ndarray:
    """(H, W) labels of ``plane``: a view for numpy data (no copy of the nD array)."""
    return np.asarray(layer.data[plane.numpy_index()])


def write_edit(layer: Labels, plane: SlicePlane, edit: SliceEdit) -> None:
    """Write a slice edit into the nD labels layer: changed pixels only, one undo step, partial refresh."""
    if edit.size == 0:
        return
    layer.data_setitem(plane.nd_indices(edit.rows, edit.cols), edit.new.astype(layer.data.dtype))


def show_slice(viewer: napari.Viewer, layer: Layer, index: tuple[int | None, ...]) -> None:
    """Move the viewer to the slice of ``layer`` whose non-displayed axes have ``index``.

    Args:
        index: one entry per layer axis: a data index on non-displayed axes,
            ``None`` on displayed ones (as :attr:`plugin.coords.SlicePlane.index`).
    """
    current = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    target = current.copy()
    fixed = [a for a, i in enumerate(index) if i is not None]
    for axis, value in enumerate(index):
        if value is not None:
            target[axis] = float(value)
    world = np.asarray(layer.data_to_world(target), dtype=float)
    offset = viewer.dims.ndim - layer.ndim
    axes = [a + offset for a in fixed]
    if axes:
        viewer.dims.set_point(axes, [float(world[a]) for a in fixed])
