"""Images to the wire: dtype conversion, contrast limits, and the sent image's types.

Pure numpy. The worker turns what it receives into SAM's uint8 RGB
(protocol/README.md): uint8 is used as is; any other dtype is scaled to
uint8 by ``contrast_limits`` [low, high], which a client takes from what the
user sees (the napari layer) or from the data (:func:`stack_contrast_limits`).
Grey is repeated to RGB and alpha is dropped on the worker side.

Wire dtypes (:data:`protocol.wire.codec.ALLOWED_DTYPES`): ``bool uint8 uint16
int16 int32 uint32 float32``. :func:`to_wire_dtype` maps any other numeric
dtype to one of them (the one place that does); :func:`to_wire` and
:func:`stack_to_wire` also settle the contrast limits, before the image key
is computed:

=========================  ==================================
pixel dtype                sent as
=========================  ==================================
uint8                      uint8, no contrast limits; limits
                           other than (0, 255) are applied
                           here (so the pixels, and the image
                           key, change with them)
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

from protocol.wire.codec import ALLOWED_DTYPES

WIRE_DTYPES = ALLOWED_DTYPES
# Percentiles that scale an image without contrast limits (the worker's own default too).
PERCENTILES = (1.0, 99.0)
# Pixels sampled to estimate percentiles (of a stack here, of an image in workers/prep.py).
PERCENTILE_SAMPLE = 1 << 22


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


@dataclass(frozen=True)
class WireStack:
    """A stack of 2D slices ready for the wire (``propagate``).

    Attributes:
        pixels: (Z, H, W) grey or (Z, H, W, C) colour, C in {3, 4}; a wire
            dtype, C-contiguous, little-endian. Slice ``z`` is ``pixels[z]``.
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


def to_wire_dtype(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` in a dtype the wire carries, values unchanged where it can hold them.

    Wire dtypes are returned as they are (no copy); int8 becomes int16; any
    other integer or float dtype (int64, uint64, float64, float16, ...)
    becomes float32 (values beyond float32's range become inf).

    Raises:
        ValueError: complex, or not a numeric dtype at all.
    """
    name, kind = pixels.dtype.name, pixels.dtype.kind
    if name in WIRE_DTYPES:
        return pixels
    if kind == "c":
        raise ValueError("complex images cannot be segmented")
    if name == "int8":
        return pixels.astype(np.int16)
    if kind in "uif":
        with np.errstate(over="ignore"):
            return pixels.astype(np.float32)
    raise ValueError(f"pixel type {pixels.dtype} is not supported")


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


def stack_contrast_limits(stack: np.ndarray) -> tuple[float, float] | None:
    """The 1st and 99th percentiles of all slices of a stack, so that every slice is scaled alike.

    Per-slice percentiles (what a single image gets) would make the
    brightness jump between slices. ``None`` for uint8 and bool stacks
    (used as they are), for stacks without finite values and for flat stacks
    (each slice is then scaled on its own). Large stacks are subsampled.

    Args:
        stack: (Z, H, W) or (Z, H, W, C) pixels, any shape works.
    """
    if stack.dtype in (np.uint8, np.bool_):
        return None
    flat = stack.reshape(-1)
    sample = flat[:: max(1, flat.size // PERCENTILE_SAMPLE)]
    if sample.dtype.kind == "f":
        sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return None
    low, high = (float(v) for v in np.percentile(sample, PERCENTILES))
    return (low, high) if low < high else None


def stretch_uint8(pixels: np.ndarray, contrast_limits: Sequence[float] | None) -> np.ndarray:
    """uint8 pixels as the user sees them with ``contrast_limits`` (low -> 0, high -> 255, clipped).

    The worker uses uint8 as it is, so narrowed limits on a uint8 layer are
    applied here, with the worker's own rounding (``workers/prep.py``).
    ``pixels`` itself is returned when the limits are None, not finite or
    (0, 255).
    """
    if contrast_limits is None:
        return pixels
    low, high = float(contrast_limits[0]), float(contrast_limits[1])
    if not (math.isfinite(low) and math.isfinite(high)) or (low, high) == (0.0, 255.0):
        return pixels
    low, high = min(low, high), max(low, high)
    values = np.arange(256, dtype=np.float32)
    if high <= low:  # flat: everything above low is "on", as the worker does
        table = np.where(values > low, 255.0, 0.0)
    else:
        table = (values - np.float32(low)) * np.float32(255.0 / (high - low))
    lut = np.clip(np.rint(table), 0, 255).astype(np.uint8)
    return lut[pixels]


def wire_pixels(
    pixels: np.ndarray, contrast_limits: Sequence[float] | None
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The conversion of :func:`to_wire` for an array of any shape (a slice or a stack).

    Returns:
        ``(pixels in a wire dtype, C-contiguous little-endian; contrast limits or None for uint8)``.

    Raises:
        ValueError: complex or non-numeric pixels.
    """
    if pixels.dtype.name == "uint8":
        return _native(stretch_uint8(pixels, contrast_limits)), None
    if pixels.dtype.kind == "b":
        return _native(pixels.astype(np.uint8) * np.uint8(255)), None
    converted = to_wire_dtype(pixels)
    low, high = normalise_limits(contrast_limits, converted)
    if converted.dtype.kind == "f" and not np.isfinite(converted).all():
        converted = np.nan_to_num(converted, nan=low, posinf=high, neginf=low)
    return _native(converted), (low, high)


def to_wire(pixels: np.ndarray, contrast_limits: Sequence[float] | None) -> WireImage:
    """Convert a 2D image to a wire dtype (see the module table), keeping its shape.

    Args:
        pixels: (H, W) or (H, W, C) image, rows first.
        contrast_limits: what the user sees, e.g. a napari layer's
            ``contrast_limits`` (applied here to uint8 when not (0, 255),
            ignored for bool; unusable ones are replaced by the data's range).

    Raises:
        ValueError: not 2D grey or 3/4-channel colour, or an unsupported dtype (complex).
    """
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ValueError(f"expected (H, W) or (H, W, 3|4) pixels, got shape {pixels.shape}")
    converted, limits = wire_pixels(pixels, contrast_limits)
    return WireImage(converted, limits)


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
