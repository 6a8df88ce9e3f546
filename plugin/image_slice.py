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
    if high == low:
        high = low + 1.0
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
    kind, name = pixels.dtype.kind, pixels.dtype.name
    if kind == "c":
        raise ValueError("complex images cannot be segmented")
    if name == "uint8":
        return WireImage(_native(pixels), None)
    if kind == "b":
        return WireImage(_native(pixels.astype(np.uint8) * np.uint8(255)), None)
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
    return WireImage(_native(converted), (low, high))


def _native(array: np.ndarray) -> np.ndarray:
    """C-contiguous and little-endian (the wire's byte order)."""
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and np.little_endian is False):
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)
