"""The 2D image sent to a worker: slice extraction and wire dtypes.

Pure numpy. The worker turns what it receives into SAM's uint8 RGB
(protocol/README.md): uint8 is used as is; any other dtype is scaled to
uint8 by ``contrast_limits`` [low, high], which we take from the napari
layer so the model sees what the user sees. Grey is repeated to RGB and
alpha is dropped on the worker side.

Wire dtypes: ``bool uint8 uint16 int16 int32 uint32 float32``. Everything
else is converted here, once, before the image key is computed:

=========================  ==================================
layer dtype                sent as
=========================  ==================================
uint8                      uint8, no contrast limits
bool                       uint8 (0 / 255), no contrast limits
uint16 int16 int32 uint32  unchanged, with contrast limits
float32                    unchanged (NaN/inf -> low limit)
float64 float16            float32 (NaN/inf -> low limit)
int8                       int16
int64 uint64 (others)      float32
=========================  ==================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from plugin.coords import SlicePlane

WIRE_DTYPES = frozenset({"bool", "uint8", "uint16", "int16", "int32", "uint32", "float32"})
_KEEP = frozenset({"uint16", "int16", "int32", "uint32", "float32"})


@dataclass(frozen=True)
class WireImage:
    """One 2D image ready for the wire.

    Attributes:
        pixels: (H, W) grey or (H, W, C) colour, C in {3, 4}; C-contiguous,
            native little-endian, a wire dtype.
        contrast_limits: ``(low, high)`` with ``low < high`` for non-uint8
            pixels, ``None`` for uint8.
    """

    pixels: np.ndarray = field(repr=False)
    contrast_limits: tuple[float, float] | None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


def extract_slice(data: np.ndarray, plane: SlicePlane, rgb: bool) -> np.ndarray:
    """The 2D slice ``plane`` of an image layer's data as a numpy array.

    Args:
        data: the layer's data: spatial axes, then a channel axis when ``rgb``.
            Any array-like (dask, zarr): only the slice is materialised.
        plane: which slice (from :mod:`plugin.coords`).
        rgb: whether the last axis is colour channels.

    Returns:
        (H, W) or (H, W, C), rows along ``plane.row_axis``.
    """
    expected = plane.ndim + (1 if rgb else 0)
    if len(data.shape) != expected:
        raise ValueError(f"image has {len(data.shape)} axes, expected {expected}")
    return np.asarray(data[plane.numpy_index()])


def normalise_limits(limits: Sequence[float] | None, pixels: np.ndarray) -> tuple[float, float]:
    """Finite ``(low, high)`` with ``low < high``; from the data's range when ``limits`` is unusable."""
    low, high = (float(limits[0]), float(limits[1])) if limits is not None else (math.nan, math.nan)
    if not (math.isfinite(low) and math.isfinite(high)):
        finite = pixels[np.isfinite(pixels)] if pixels.dtype.kind == "f" else pixels
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high < low:
        low, high = high, low
    if high <= low:
        high = low + max(1.0, abs(low) * 1e-6)  # + 1.0 alone is lost in rounding above 2**53
    return low, high


def to_wire(pixels: np.ndarray, contrast_limits: Sequence[float] | None) -> WireImage:
    """Convert a slice to a wire dtype (see the module table), keeping its shape.

    Args:
        pixels: (H, W) or (H, W, C) slice from :func:`extract_slice`.
        contrast_limits: the layer's ``contrast_limits`` (ignored for uint8/bool).

    Raises:
        ValueError: not 2D grey or 3/4-channel colour, or an unsupported dtype (complex).
    """
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ValueError(f"expected (H, W) or (H, W, 3|4) pixels, got shape {pixels.shape}")
    converted, limits = wire_pixels(pixels, contrast_limits)
    return WireImage(converted, limits)


def wire_pixels(
    pixels: np.ndarray, contrast_limits: Sequence[float] | None
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The dtype conversion of :func:`to_wire` for an array of any shape (a slice or a stack).

    Returns:
        ``(pixels in a wire dtype, C-contiguous little-endian; contrast limits or None for uint8)``.

    Raises:
        ValueError: complex pixels.
    """
    kind, name = pixels.dtype.kind, pixels.dtype.name
    if kind == "c":
        raise ValueError("complex images cannot be segmented")
    if name == "uint8":
        return _native(pixels), None
    if kind == "b":
        return _native(pixels.astype(np.uint8) * np.uint8(255)), None
    if name == "int8":
        converted = pixels.astype(np.int16)
    elif name in _KEEP:
        converted = pixels
    else:
        with np.errstate(over="ignore"):  # beyond float32's range: inf, clipped to the limits below
            converted = pixels.astype(np.float32)
    low, high = normalise_limits(contrast_limits, converted)
    if converted.dtype.kind == "f" and not np.isfinite(converted).all():
        converted = np.nan_to_num(converted, nan=low, posinf=high, neginf=low)
    return _native(converted), (low, high)


@dataclass(frozen=True)
class WireStack:
    """A stack of 2D slices ready for the wire (``propagate``).

    Attributes:
        pixels: (Z, H, W) grey or (Z, H, W, C) colour, C in {3, 4}; a wire
            dtype, C-contiguous, little-endian. Slice ``z`` is ``pixels[z]``,
            rows and columns as in :func:`extract_slice`.
        contrast_limits: ``(low, high)`` applied to every slice (None for uint8).
    """

    pixels: np.ndarray = field(repr=False)
    contrast_limits: tuple[float, float] | None

    @property
    def frames(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of each slice."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])


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


def stack_to_wire(pixels: np.ndarray, contrast_limits: Sequence[float] | None) -> WireStack:
    """Convert a (Z, H, W[, C]) stack to a wire dtype (see the module table), one set of limits.

    Raises:
        ValueError: not a (Z, H, W) or (Z, H, W, 3|4) stack, or complex pixels.
    """
    if pixels.ndim not in (3, 4) or (pixels.ndim == 4 and pixels.shape[3] not in (3, 4)):
        raise ValueError(f"expected a (Z, H, W) or (Z, H, W, 3|4) stack, got shape {pixels.shape}")
    converted, limits = wire_pixels(pixels, contrast_limits)
    return WireStack(converted, limits)


def _native(array: np.ndarray) -> np.ndarray:
    """C-contiguous and little-endian (the wire's byte order)."""
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and np.little_endian is False):
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)
