"""Image preparation: a received image -> the uint8 (H, W, 3) RGB that SAM2 encodes.

Rules (``protocol/README.md``): uint8 is used as is; every other dtype is
scaled linearly so that ``contrast_limits`` [low, high] (or, without them, the
image's 1st and 99th percentiles) map to [0, 255], then clipped. Grey is
repeated to three channels; an alpha channel is dropped. ``bool`` maps
False/True to 0/255.

Memory: whatever the image's size and dtype, preparing it needs the uint8
RGB result plus temporaries of one band of rows (``BAND_PIXELS``): the
conversion runs band by band, and the percentiles of an image larger than
``PERCENTILE_SAMPLE`` pixels come from a strided sample of that many. Images
larger than ``MAX_IMAGE_PIXELS`` are refused (clients send windows or tiles
of large slices, ``protocol.ops.windowed`` / ``protocol.ops.tiled``), so
one request never makes the model's own float copies of a huge image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from protocol.wire.wire_image import PERCENTILE_SAMPLE, PERCENTILES

# Largest image accepted, in pixels (8192 x 8192): SAM2's transforms make float32 copies
# of the whole image (12 bytes per pixel) before resizing it to 1024.
MAX_IMAGE_PIXELS = 1 << 26
# Pixels converted at a time (bounds the float temporaries).
BAND_PIXELS = 1 << 20


def check_image_shape(shape: Sequence[int]) -> tuple[int, int]:
    """Validate an image shape and return its (H, W).

    Accepts (H, W) grey and (H, W, 3) / (H, W, 4) colour with H, W >= 1 and
    H * W <= ``MAX_IMAGE_PIXELS``.

    Raises:
        ValueError: any other shape.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (3, 4)):
        raise ValueError(f"image must be (H, W) grey or (H, W, 3|4) colour, got shape {list(shape)}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"image must not be empty, got shape {list(shape)}")
    if shape[0] * shape[1] > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"image must have at most {MAX_IMAGE_PIXELS} pixels (8192 x 8192), got {shape[0]} x {shape[1]}: "
            "send a window around the prompt or tiles of the slice (protocol.ops.windowed, "
            "protocol.ops.tiled), which are seen at the model's 1024 px anyway"
        )
    return shape[0], shape[1]


def check_contrast_limits(contrast_limits: object) -> tuple[float, float] | None:
    """Validate ``contrast_limits`` from request params.

    Args:
        contrast_limits: ``None`` or ``[low, high]`` finite numbers with low < high.

    Raises:
        ValueError: anything else.
    """
    if contrast_limits is None:
        return None
    if (
        not isinstance(contrast_limits, (list, tuple))
        or len(contrast_limits) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in contrast_limits)
    ):
        raise ValueError(f"contrast_limits must be [low, high] numbers, got {contrast_limits!r}")
    low, high = float(contrast_limits[0]), float(contrast_limits[1])
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"contrast_limits must be finite, got {[low, high]}")
    if not low < high:
        raise ValueError(f"contrast_limits must have low < high, got {[low, high]}")
    return low, high


def _percentile_limits(values: np.ndarray) -> tuple[float, float] | None:
    """The 1st and 99th percentiles of the finite values (a strided sample of large images)."""
    if values.size > PERCENTILE_SAMPLE:
        step = math.ceil(math.sqrt(values.size / PERCENTILE_SAMPLE))
        values = values[::step, ::step]
    flat = np.ravel(values)
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return None
    low, high = (float(v) for v in np.percentile(flat, PERCENTILES))
    return low, high


def _scale_band(values: np.ndarray, low: float, high: float) -> np.ndarray:
    data = values.astype(np.float32, copy=False)
    if high <= low:  # flat image: no range to scale, everything above low is "on"
        scaled = np.where(data > low, 255.0, 0.0)
    else:
        scaled = (data - low) * (255.0 / (high - low))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _bands(height: int, row_pixels: int) -> list[slice]:
    rows = max(1, BAND_PIXELS // max(1, row_pixels))
    return [slice(r, min(height, r + rows)) for r in range(0, height, rows)]


def prepare_image(image: np.ndarray, contrast_limits: Sequence[float] | None = None) -> np.ndarray:
    """Convert a received image to SAM2's input.

    Args:
        image: (H, W) grey or (H, W, 3|4) RGB(A) pixels of dtype bool, uint8,
            uint16, int16, int32, uint32 or float32 (NaN maps to 0, +inf to 255).
        contrast_limits: (low, high) mapped to 0 and 255 for non-uint8 images;
            ``None`` uses the 1st and 99th percentiles of the finite pixels.
            Ignored for uint8.

    Returns:
        C-contiguous uint8 (H, W, 3) RGB in [0, 255].

    Raises:
        ValueError: unsupported shape or dtype, or bad contrast limits.
    """
    height, width = check_image_shape(image.shape)
    limits = check_contrast_limits(list(contrast_limits) if contrast_limits is not None else None)
    if image.ndim == 3:
        image = image[:, :, :3]
    if image.dtype.kind not in "buif":
        raise ValueError(f"image dtype {image.dtype} is not supported")
    if image.dtype == np.uint8 and image.ndim == 3:
        return np.ascontiguousarray(image)
    low = high = 0.0
    if image.dtype.kind in "uif" and image.dtype != np.uint8:
        scale = limits if limits is not None else _percentile_limits(image)
        if scale is None:  # not one finite pixel
            return np.zeros((height, width, 3), dtype=np.uint8)
        low, high = scale
    rgb8 = np.empty((height, width, 3), dtype=np.uint8)
    for band in _bands(height, width * (image.shape[2] if image.ndim == 3 else 1)):
        part = image[band]
        if part.dtype == np.uint8:
            converted = part
        elif part.dtype == np.bool_:
            converted = part.astype(np.uint8) * np.uint8(255)
        else:
            converted = _scale_band(part, low, high)
        rgb8[band] = converted if converted.ndim == 3 else converted[:, :, None]
    return rgb8
