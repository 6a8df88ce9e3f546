"""Coordinate mapping: napari world -> layer data -> the 2D slice sent to SAM2.

Pure functions (numpy only, no Qt, no napari). Vocabulary:

* **world**: napari's world coordinates (scale, translate, affine applied),
  one value per viewer dimension.
* **data**: the layer's array coordinates, one float per layer axis,
  obtained with ``layer.world_to_data(world)``. Pixel ``i`` is centred on the
  integer ``i`` (it covers ``[i - 0.5, i + 0.5)``), napari's convention.
* **plane**: the displayed 2D slice of an nD layer: two displayed axes
  (``row_axis < col_axis``) and an integer index on every other axis.
* **pixel**: ``(row, col)`` position inside that 2D slice as the wire wants
  it (protocol/README.md, workers/prompts.py): *continuous* coordinates in
  which pixel ``(r, c)`` covers ``[r, r + 1) x [c, c + 1)``, so valid
  positions lie in ``[0, H] x [0, W]``. napari centres pixel ``i`` on ``i``,
  hence ``pixel = data + 0.5`` (:data:`PIXEL_OFFSET`); this module is the
  only place that shift happens. Rows run along ``row_axis``, columns along
  ``col_axis``; the worker swaps to SAM's (x, y) in exactly one place.

RGB(A) images: the channel axis is not a layer axis in napari (``layer.ndim``
excludes it), so it never appears here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PIXEL_OFFSET = 0.5
"""Wire pixel position minus napari data coordinate (pixel centres: ``i + 0.5`` vs ``i``)."""


class OutsideImage(ValueError):
    """A position lies outside the image (or the requested slice does not exist)."""


def layer_displayed_axes(
    viewer_displayed: Sequence[int], viewer_ndim: int, layer_ndim: int
) -> tuple[int, int]:
    """Map the viewer's displayed dimensions to a layer's (row_axis, col_axis).

    napari aligns a layer with fewer dimensions to the *last* viewer
    dimensions, so viewer axis ``d`` is layer axis ``d - (viewer_ndim - layer_ndim)``.

    Args:
        viewer_displayed: ``viewer.dims.displayed`` (2 entries in 2D view).
        viewer_ndim: ``viewer.dims.ndim``.
        layer_ndim: ``layer.ndim`` (spatial axes only).

    Returns:
        ``(row_axis, col_axis)`` layer axes, ``row_axis < col_axis``.

    Raises:
        ValueError: fewer than two displayed axes belong to the layer, or the
            view is 3D.
    """
    offset = viewer_ndim - layer_ndim
    axes = sorted(d - offset for d in viewer_displayed if 0 <= d - offset < layer_ndim)
    if len(axes) != 2:
        raise ValueError(
            f"segmentation needs a 2D view of the image (displayed {list(viewer_displayed)}, "
            f"layer has {layer_ndim} of {viewer_ndim} dims); switch to 2D display"
        )
    return axes[0], axes[1]


@dataclass(frozen=True)
class SlicePlane:
    """The displayed 2D slice of an nD layer.

    Attributes:
        shape: the layer's spatial shape (``layer.data.shape`` without the RGB axis).
        row_axis: layer axis shown as rows (vertical).
        col_axis: layer axis shown as columns; ``row_axis < col_axis``.
        index: one entry per layer axis: the integer slice index on
            non-displayed axes, ``None`` on the two displayed ones.
    """

    shape: tuple[int, ...]
    row_axis: int
    col_axis: int
    index: tuple[int | None, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the 2D slice."""
        return self.shape[self.row_axis], self.shape[self.col_axis]

    @property
    def key(self) -> tuple[int, ...]:
        """Identity of the slice: displayed axes then the fixed indices."""
        fixed = tuple(i for i in self.index if i is not None)
        return (self.row_axis, self.col_axis, *fixed)

    def numpy_index(self) -> tuple[int | slice, ...]:
        """Index selecting the 2D slice: ``data[plane.numpy_index()]`` is (H, W[, C])."""
        return tuple(slice(None) if i is None else i for i in self.index)

    def nd_indices(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """Full nD fancy indices for pixels ``(rows[k], cols[k])`` of this slice."""
        rows = np.asarray(rows, dtype=np.intp)
        cols = np.asarray(cols, dtype=np.intp)
        out: list[np.ndarray] = []
        for axis, fixed in enumerate(self.index):
            if axis == self.row_axis:
                out.append(rows)
            elif axis == self.col_axis:
                out.append(cols)
            else:
                out.append(np.full(rows.shape, fixed, dtype=np.intp))
        return tuple(out)


def slice_index(value: float, length: int) -> int:
    """The array index napari shows for data coordinate ``value`` (``np.round``).

    Raises:
        OutsideImage: the rounded index is not in ``[0, length)``.
    """
    index = int(np.round(value))
    if not 0 <= index < length:
        raise OutsideImage(f"position {value:.2f} is outside the stack (0..{length - 1})")
    return index


def plane_at(data_point: Sequence[float], shape: Sequence[int], displayed: tuple[int, int]) -> SlicePlane:
    """The slice through ``data_point`` whose displayed axes are ``displayed``.

    Args:
        data_point: data coordinates, one per layer axis (``layer.world_to_data``).
        shape: spatial shape of the layer.
        displayed: ``(row_axis, col_axis)``, as from :func:`layer_displayed_axes`.

    Raises:
        OutsideImage: ``data_point`` lies outside the stack on a non-displayed axis.
    """
    if len(data_point) != len(shape):
        raise ValueError(f"point has {len(data_point)} coordinates, layer has {len(shape)} axes")
    row_axis, col_axis = sorted(displayed)
    index = tuple(
        None if a in (row_axis, col_axis) else slice_index(data_point[a], shape[a]) for a in range(len(shape))
    )
    return SlicePlane(tuple(int(s) for s in shape), row_axis, col_axis, index)


def pixel_in_plane(data_point: Sequence[float], plane: SlicePlane) -> tuple[float, float]:
    """Wire position ``(row, col)`` of ``data_point`` in the slice ``plane`` (``data + 0.5``)."""
    return (
        float(data_point[plane.row_axis]) + PIXEL_OFFSET,
        float(data_point[plane.col_axis]) + PIXEL_OFFSET,
    )


def inside(pixel: tuple[float, float], size: tuple[int, int]) -> bool:
    """Whether wire position ``(row, col)`` lies on an image of ``size`` (``0 <= p < n`` per axis)."""
    return all(0.0 <= p < n for p, n in zip(pixel, size, strict=True))


def on_plane(data_point: Sequence[float], plane: SlicePlane) -> bool:
    """Whether ``data_point`` lies on ``plane`` (same rounded index on every fixed axis)."""
    for axis, fixed in enumerate(plane.index):
        if fixed is not None and int(np.round(data_point[axis])) != fixed:
            return False
    return True


def box_in_plane(corners: np.ndarray, plane: SlicePlane) -> tuple[float, float, float, float]:
    """Wire box ``[row_min, col_min, row_max, col_max]`` around ``corners``, clipped to ``[0, H] x [0, W]``.

    Args:
        corners: (N, ndim) data coordinates of the rectangle's vertices.
        plane: the slice the box is drawn on.

    Raises:
        OutsideImage: the box does not overlap the image.
    """
    corners = np.asarray(corners, dtype=float)
    rows = corners[:, plane.row_axis] + PIXEL_OFFSET
    cols = corners[:, plane.col_axis] + PIXEL_OFFSET
    height, width = plane.size
    r0, r1 = max(float(rows.min()), 0.0), min(float(rows.max()), float(height))
    c0, c1 = max(float(cols.min()), 0.0), min(float(cols.max()), float(width))
    if r0 >= r1 or c0 >= c1:
        raise OutsideImage("the box does not overlap the image")
    return r0, c0, r1, c1
