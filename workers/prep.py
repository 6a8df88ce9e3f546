"""Image preparation: a received image -> the uint8 (H, W, 3) RGB that SAM2 encodes.

Rules (``protocol/README.md``): uint8 is used as is; every other dtype is
scaled linearly so that ``contrast_limits`` [low, high] (or, without them, the
image's 1st and 99th percentiles) map to [0, 255], then clipped. Grey is
repeated to three channels; an alpha channel is dropped. ``bool`` maps
False/True to 0/255.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (1.0, 99.0)


def check_image_shape(shape: Sequence[int]) -> tuple[int, int]:
    """Validate an image shape and return its (H, W).

    Accepts (H, W) grey and (H, W, 3) / (H, W, 4) colour with H, W >= 1.

    Raises:
        ValueError: any other shape.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (3, 4)):
        raise ValueError(f"image must be (H, W) grey or (H, W, 3|4) colour, got shape {list(shape)}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"image must not be empty, got shape {list(shape)}")
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


def _scale_to_uint8(values: np.ndarray, contrast_limits: tuple[float, float] | None) -> np.ndarray:
    data = values.astype(np.float32, copy=False)
    if contrast_limits is None:
        finite = values if values.dtype.kind in "ui" else data[np.isfinite(data)]
        if finite.size == 0:
            return np.zeros(data.shape, dtype=np.uint8)
        low, high = (float(v) for v in np.percentile(finite, PERCENTILES))
    else:
        low, high = contrast_limits
    if high <= low:  # flat image: no range to scale, everything above low is "on"
        scaled = np.where(data > low, 255.0, 0.0)
    else:
        scaled = (data - low) * (255.0 / (high - low))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


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
    check_image_shape(image.shape)
    limits = check_contrast_limits(list(contrast_limits) if contrast_limits is not None else None)
    if image.ndim == 3:
        image = image[:, :, :3]
    if image.dtype == np.uint8:
        rgb8 = image
    elif image.dtype == np.bool_:
        rgb8 = image.astype(np.uint8) * np.uint8(255)
    elif image.dtype.kind in "uif":
        rgb8 = _scale_to_uint8(image, limits)
    else:
        raise ValueError(f"image dtype {image.dtype} is not supported")
    if rgb8.ndim == 2:
        rgb8 = np.repeat(rgb8[:, :, None], 3, axis=2)
    return np.ascontiguousarray(rgb8)
