"""The 2D slice (or stack of slices) of a napari image layer that is sent to a worker.

Pure numpy. Which slice is shown comes from :mod:`plugin.view.coords` (a
:class:`~plugin.view.coords.SlicePlane`); here its pixels are taken out of the
layer's data, rows along the plane's row axis. Converting them for the wire
(dtypes, contrast limits) is :mod:`protocol.wire.wire_image`'s job, shared with
``sam2-batch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from plugin.view.coords import SlicePlane
from protocol.geometry.windows import MODEL_INPUT
from protocol.wire.wire_image import WireImage, WireStack, stack_to_wire, to_wire


def extract_slice(data: np.ndarray, plane: SlicePlane, rgb: bool) -> np.ndarray:
    """The 2D slice ``plane`` of an image layer's data as a numpy array.

    Args:
        data: the layer's data: spatial axes, then a channel axis when ``rgb``.
            Any array-like (dask, zarr): only the slice is materialised.
        plane: which slice (from :mod:`plugin.view.coords`).
        rgb: whether the last axis is colour channels.

    Returns:
        (H, W) or (H, W, C), rows along ``plane.row_axis``.
    """
    expected = plane.ndim + (1 if rgb else 0)
    if len(data.shape) != expected:
        raise ValueError(f"image has {len(data.shape)} axes, expected {expected}")
    return np.asarray(data[plane.numpy_index()])


def is_large(plane: SlicePlane, model_input: int = MODEL_INPUT) -> bool:
    """Whether a slice is larger than the model's input on either side (then windows and tiles are used)."""
    return max(plane.size) > model_input


class LazyPlane:
    """The 2D slice ``plane`` of an nD array-like, read (and written) rectangle by rectangle.

    ``LazyPlane(data, plane, rgb)[r0:r1, c0:c1]`` indexes only that rectangle
    of the slice in ``data`` (numpy, dask, zarr, a napari multiscale level),
    so a window of a 20,000² slice never reads the slice.

    Attributes:
        shape: (H, W) or (H, W, C) with ``rgb``; rows along ``plane.row_axis``.
        dtype: the data's dtype.
    """

    def __init__(self, data: Any, plane: SlicePlane, rgb: bool = False) -> None:
        expected = plane.ndim + (1 if rgb else 0)
        if len(data.shape) != expected:
            raise ValueError(f"image has {len(data.shape)} axes, expected {expected}")
        self.data, self.plane = data, plane
        height, width = plane.size
        self.shape: tuple[int, ...] = (height, width, int(data.shape[-1])) if rgb else (height, width)
        self.dtype = np.dtype(data.dtype)

    def _index(self, key: Any) -> tuple[Any, ...]:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * max(0, 2 - len(key))
        rows, cols, rest = key[0], key[1], key[2:]
        index = tuple(
            rows if a == self.plane.row_axis else cols if a == self.plane.col_axis else i
            for a, i in enumerate(self.plane.index)
        )
        return index + tuple(rest)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.data[self._index(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[self._index(key)] = value


def stack_axis(plane: SlicePlane) -> int | None:
    """The axis a stack runs along: the first non-displayed axis of ``plane`` (None for a 2D layer)."""
    return next((a for a, i in enumerate(plane.index) if i is not None), None)


def plane_on(plane: SlicePlane, axis: int, index: int) -> SlicePlane:
    """``plane`` moved to ``index`` along ``axis`` (other fixed axes unchanged)."""
    if plane.index[axis] is None:
        raise ValueError(f"axis {axis} is displayed; it has no slices")
    if not 0 <= index < plane.shape[axis]:
        raise ValueError(f"slice {index} is outside 0..{plane.shape[axis] - 1} along axis {axis}")
    fixed = tuple(index if a == axis else i for a, i in enumerate(plane.index))
    return SlicePlane(plane.shape, plane.row_axis, plane.col_axis, fixed)


def extract_stack(data: np.ndarray, plane: SlicePlane, axis: int, rgb: bool) -> np.ndarray:
    """All slices of ``plane``'s kind along ``axis``, other fixed axes at ``plane``'s indices.

    Args:
        data: the image layer's data (spatial axes, then channels when ``rgb``).
        plane: the shown slice.
        axis: the stack axis (a non-displayed axis of ``plane``).
        rgb: whether the last axis is colour channels.

    Returns:
        (Z, H, W) or (Z, H, W, C): ``out[z]`` equals
        ``extract_slice(data, plane_on(plane, axis, z), rgb)``.
    """
    expected = plane.ndim + (1 if rgb else 0)
    if len(data.shape) != expected:
        raise ValueError(f"image has {len(data.shape)} axes, expected {expected}")
    if plane.index[axis] is None:
        raise ValueError(f"axis {axis} is displayed; it has no slices")
    index = tuple(slice(None) if a == axis else i for a, i in enumerate(plane.numpy_index()))
    block = np.asarray(data[index])
    kept = sorted({axis, plane.row_axis, plane.col_axis})  # the block's first axes, in this order
    order = [kept.index(a) for a in (axis, plane.row_axis, plane.col_axis)]
    if rgb:
        order.append(3)
    return np.ascontiguousarray(np.transpose(block, order))


def wire_slice(
    data: np.ndarray, plane: SlicePlane, rgb: bool, contrast_limits: Sequence[float] | None
) -> WireImage:
    """The slice ``plane`` ready for the wire: :func:`extract_slice` then ``wire_image.to_wire``.

    Args:
        contrast_limits: the layer's ``contrast_limits`` (what the user sees).
    """
    return to_wire(extract_slice(data, plane, rgb), contrast_limits)


def wire_stack(
    data: np.ndarray, plane: SlicePlane, axis: int, rgb: bool, contrast_limits: Sequence[float] | None
) -> WireStack:
    """The stack along ``axis`` ready for the wire: :func:`extract_stack` then
    :func:`protocol.wire.wire_image.stack_to_wire` (one set of limits for all slices)."""
    return stack_to_wire(extract_stack(data, plane, axis, rgb), contrast_limits)
